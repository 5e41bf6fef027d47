"""The plain-CNN counterpart of the no-argument CPU run: same front end, conv blocks, data and schedule,
global mean pooling instead of the two GRU layers (the report's CNN-vs-CRNN comparison, on synthetic data).

    python -m crnn_jax.train --config experiments/cnn.py

Measured: see experiments/README.md (table "built-in synthetic set").
"""

from crnn_jax.config import default_config

config = default_config("cpu").replace(model="cnn")
