"""The report's plain-CNN baseline under the report's recipe (batch 4, Algorithm 8.6), for the CNN-vs-CRNN row.

    python -m crnn_jax.train --config experiments/seed_report_cnn.py

experiments/seed_report.py with one change, the model: the same 4 conv blocks, global mean pooling, Dense.
Measured: see experiments/README.md.
"""

import os

from crnn_jax.config import load_preset

config = load_preset(os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed_report.py")).replace(model="cnn")
