"""Smoke preset for tests: the CRNN family at toy size, so a run compiles and trains in seconds.

    python -m crnn_jax.train --config experiments/smoke.py --workdir /tmp/smoke

Measures nothing; tests use it to check plumbing (devices, resume, reports), not accuracy.
"""

from crnn_jax.config import Config

config = Config(
    conv_channels=(8, 16, 16, 16),
    gru_units=(8, 8),
    synth_clips_per_class=4,
    synth_seconds=2.0,
    crop_seconds=1.0,
    batch_size=8,
    max_steps=6,
    log_every=1,
    checkpoint_every=2,
    valid_fraction=0.25,
)
