"""CNN vs CRNN on the built-in synthetic set, small enough for a 2-core CPU (a few minutes a run).

    python -m crnn_jax.train --config experiments/synth_compare.py --model crnn --seed 0 --workdir runs/synth-crnn-0
    python -m crnn_jax.train --config experiments/synth_compare.py --model cnn --seed 0 --workdir runs/synth-cnn-0

200 clips of 4 s (20 per class): a stratified random split by song, 140 train / 20 valid / 40 test; 2 s crops.
Measured: see experiments/README.md (synthetic data only; says nothing about real genres).
"""

from crnn_jax.config import Config

config = Config(conv_channels=(16, 32, 32, 32), gru_units=(16, 16), synth_clips_per_class=20, synth_seconds=4.0,
                crop_seconds=2.0, batch_size=16, epochs=15, log_every=9, checkpoint_every=135, steps_per_call=9)
