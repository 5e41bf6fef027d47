"""The 2016 report's recipe: CRNN, RMSprop with Nesterov momentum (Algorithm 8.6), batch size 4.

    python -m crnn_jax.train --config experiments/seed_report.py                     # built-in data
    python -m crnn_jax.train --config experiments/seed_report.py --data /path/to/genres --split fault-filtered

Choi-size CRNN (64/128/128/128 conv, GRU 32/32, ~0.39 M parameters) on 29 s crops (Choi's input length:
96 mels fold to 1 band, ~1250 frames pool to 13 GRU steps), global learning rate 1e-3 (decay 0.9,
momentum 0.9), dropout 0.1 / 0.3. On the built-in data the clips are made 30 s long so a crop fits.
Measured: on a 2-core CPU a step at batch 4 x 29 s takes seconds, so this recipe is for a GPU
(experiments/BENCHMARKS.md); the CPU run was checked with --max-steps only (experiments/README.md).
"""

from crnn_jax.config import Config

config = Config(
    model="crnn",
    batch_size=4,
    crop_seconds=29.0,
    synth_seconds=30.0,
    synth_clips_per_class=100,
    learning_rate=1e-3,
    rms_decay=0.9,
    momentum=0.9,
    epochs=20,
    log_every=50,
    checkpoint_every=500,
)
