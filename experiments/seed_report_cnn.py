"""The report's plain-CNN baseline under the report's recipe (batch 4, Algorithm 8.6), for the CNN-vs-CRNN row.

    python -m crnn_jax.train --config experiments/seed_report_cnn.py

Identical to experiments/seed_report.py but for the model: the same 4 conv blocks, global mean pooling, Dense.
Measured: see experiments/README.md.
"""

from crnn_jax.config import Config

config = Config(
    model="cnn",
    batch_size=4,
    crop_seconds=29.0,
    synth_seconds=30.0,
    synth_clips_per_class=100,
    learning_rate=1e-3,
    epochs=20,
    log_every=50,
    checkpoint_every=500,
)
