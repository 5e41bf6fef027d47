"""The plain-CNN counterpart of the no-argument CPU run: same front end, conv blocks, data and schedule,
global mean pooling instead of the two GRU layers (the report's CNN-vs-CRNN comparison, on synthetic data).

    python -m crnn_jax.train --config experiments/cnn.py

Measured (idle 2-core CPU, JAX 0.10.2, 2026-11-24, seeds 0, 1, 2): test accuracy 1.000 by song (120 songs)
for every seed, 68-70 s wall a run at one step per call (the preset now takes 9, with the same metrics). On this synthetic set the CNN matches the CRNN: experiments/README.md
(row "synthetic, CPU default") says why and what that does and does not show.
"""

from crnn_jax.config import default_config

config = default_config("cpu").replace(model="cnn")
