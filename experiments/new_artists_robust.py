"""experiments/gtzan70_robust.py on the new-artist axis, as experiments/new_artists.py is for gtzan70.py: trained
on all 70 clips of gtzan-70 for that recipe's 2,520 steps, two networks (its ensemble=2), tested on every clip of
gtzan-53-16k (other artists, resampled through 16 kHz).

    crnn-jax train --config experiments/new_artists_robust.py --seed 0 --workdir runs/na-robust-s0
        # trains runs/na-robust-s0 and runs/na-robust-s0-m1; its last line is the ensemble's test accuracy
    crnn-jax evaluate --workdir runs/na-robust-s0 --workdir runs/na-robust-s0-m1 --out runs/na-robust-s0-ens
    python experiments/new_artist_summary.py runs/na-robust-s0-ens runs/na-robust-s1-ens runs/na-robust-s2-ens

Measured (experiments/README.md, "New artists", row N13): 0.497 +- 0.010 by song over seeds 0-2; member 0
alone (--set ensemble=1, row N12) 0.503 +- 0.011.
"""

import os

from crnn_jax.config import load_preset

config = load_preset(os.path.join(os.path.dirname(os.path.abspath(__file__)), "gtzan70_robust.py")).replace(
    split="all", test_data="../shared/data/gtzan-53-16k", max_steps=2520)
