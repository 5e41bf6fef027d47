"""experiments/gtzan70_robust.py on the new-artist axis, as experiments/new_artists.py is for gtzan70.py: trained
on all 70 clips of gtzan-70 for that recipe's 2,520 steps, tested on every clip of gtzan-53-16k (other artists,
resampled through 16 kHz).

    crnn-jax train --config experiments/new_artists_robust.py --seed 0 --workdir runs/na-robust-s0
    python experiments/new_artist_summary.py runs/na-robust-s0 runs/na-robust-s1 runs/na-robust-s2

Measured (experiments/README.md, "New artists", row N12): 0.503 +- 0.011 by song over seeds 0-2.
"""

import os

from crnn_jax.config import load_preset

config = load_preset(os.path.join(os.path.dirname(os.path.abspath(__file__)), "gtzan70_robust.py")).replace(
    split="all", test_data="../shared/data/gtzan-53-16k", max_steps=2520)
