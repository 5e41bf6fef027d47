"""New artists through another recording chain: the gtzan70 recipe trained on all 70 clips of gtzan-70 (GTZAN ids
00-09 of each genre, mostly one artist or album per genre) and tested on every clip of gtzan-53-16k (53 clips of
ids 11-96: mostly other artists, and resampled to 16 kHz, so nothing above 8 kHz). The number it gives mixes
"artist never heard" with "another recording chain"; experiments/README.md, "New artists", separates the two.

    crnn-jax train --config experiments/new_artists.py --seed 0 --workdir runs/na-seed0
    python experiments/baseline_mfcc_svm.py --workdir runs/na-seed0      # MFCC+SVM on the same songs
    crnn-jax train --config experiments/new_artists.py --seed 0 --set eq_db=6 --workdir runs/na-eq6-seed0

What it measured (experiments/README.md, "New artists", rows N1-N12; 2-core AMD EPYC): 0.459 +- 0.022 by song over
seeds 0-2 (MFCC+SVM on the same songs 0.358); random low-pass on 80 % of the crops (--set lowpass_prob=0.8)
0.522 +- 0.058, the front end cut at 8 kHz (--set f_max=8000) 0.522 +- 0.029 (MFCC+SVM with that front end
0.585); both nearly remove the 16 kHz chain's loss on same-artist songs (0.36 -> 0.03 and 0.01) and cost same-
artist accuracy on gtzan-70's folds (-6 and -9 songs of 70 on seed 0); with 2,520 steps the low-pass keeps its
lead and gives two of the six back, and as two networks five more of 350 over 25 folds:
experiments/gtzan70_robust.py, tested here by new_artists_robust.py (0.497 +- 0.010; one network 0.503 +- 0.011). `python experiments/new_artist_summary.py
RUN...` prints a row: mean +- std, per-genre recall pooled over the runs, the runs as one ensemble.
results.json: test_accuracy (by song over the 53), per-class recall (test.per_class), confusion, test loss.
The split is "all": every gtzan-70 clip trains (valid_fraction 0, as in gtzan70.py), for the 1,680 steps the
recipe was tuned at (56 songs a fold there, 70 here).
"""

import os

from crnn_jax.config import load_preset

config = load_preset(os.path.join(os.path.dirname(os.path.abspath(__file__)), "gtzan70.py")).replace(
    split="all", test_data="../shared/data/gtzan-53-16k", max_steps=1680)
