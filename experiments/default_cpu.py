"""What `python -m crnn_jax.train` runs on a CPU with no arguments (config.default_config("cpu")), as a file.

    python -m crnn_jax.train --config experiments/default_cpu.py

The CRNN family at CPU size: channels 32/64/64/64 (Choi's are 64/128/128/128), GRU 32/32, 3 s crops of the
built-in synthetic set (60 clips x 6 s per class; 420 train / 60 valid / 120 test songs), batch 16,
Algorithm 8.6 at learning rate 1e-3, 8 epochs (216 steps).
Measured (2-core CPU, JAX 0.10.2, 2026-11-24, seed 0, with the 12-epoch version of this preset and
BatchNorm momentum 0.9): test accuracy 1.000 by song (120 songs) and by window; validation accuracy
0.967 at step 135 and 1.0 from step 162 on, hence 8 epochs. Wall time on an idle machine: not yet
measured (454 s for 12 epochs with other jobs sharing the two cores).
"""

from crnn_jax.config import default_config

config = default_config("cpu")
