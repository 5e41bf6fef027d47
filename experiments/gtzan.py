"""Real-data recipe: the report's CRNN on GTZAN-layout folders, evaluated by song on the fault-filtered split.

    python -m crnn_jax.train --config experiments/gtzan.py --data /path/to/genres --seed 0 \
        --workdir runs/gtzan-crnn-ff-0
    ... --model cnn          # the CNN baseline
    ... --split random       # a stratified random split by song instead

--data is a folder of genre sub-folders (GTZAN's genres/blues/blues.00000.wav, ...). The default split is
the fault-filtered one of Kereliuk, Sturm & Larsen 2015 (443 train / 197 valid / 290 test clips; duplicates,
mislabelled and corrupt clips dropped, and no artist in two parts); songs absent from the folder are left
out of every part, so the recipe also runs on a folder of a few dozen clips (then it measures little:
see experiments/README.md); for folders of your own music, whose file names are not GTZAN's, add
--split random. Training is counted in epochs (one random 3 s crop of every training song each),
so the step count follows the data: 443 songs at batch 32 are 14 steps an epoch, 2,100 steps in all.

What it measured: NOT YET MEASURED on GTZAN-1000. The full data set is not on the machine this recipe was written
on (no network), so the settings below are the report's and Choi et al.'s, kept for a GPU and the full data
(on 2 CPU cores a Choi-size fold is ~4x the work of the CPU width and 150 epochs of 443 songs are ~2,100
steps: hours, not minutes). The recipe tuned on real clips is the small-data CPU preset
experiments/gtzan70.py: 5-fold evaluation by song on 70 real GTZAN clips (7 per genre) with crnn_jax.cv,
beside MFCC+SVM on the same folds; its table is in experiments/README.md ("70 real GTZAN clips"). On those clips the CRNN leads
MFCC+SVM by less than the fold spread (0.814 against 0.750, 5 folds x 2 seeds); the schedule was the
largest lever (420 -> 1,680 steps: 0.671 -> 0.800), and testing the best validation pass did not help
with one validation song per genre (the full split's 197 validation songs may select better: not measured). What a GPU changes: the same
5 folds take seconds to a minute each, so the Choi-size model, ten folds, more seeds and longer schedules
become affordable; nothing here has been measured on a GPU.
"""


from crnn_jax.config import Config

config = Config(
    data="genres",  # GTZAN's folder name when unpacked; give the real path with --data
    split="fault-filtered",  # artist-filtered, faults removed; "random" = stratified random split by song
    sample_rate=22050,  # GTZAN's own rate: no resampling
    model="crnn",
    conv_channels=(64, 128, 128, 128),  # Choi et al. 2017, ~0.4 M parameters: GTZAN has only 1,000 clips
    gru_units=(32, 32),
    crop_seconds=3.0,  # 10 windows per 30 s clip at evaluation; time pools (2, 2, 2, 2) -> 8 GRU steps
    epochs=150,
    batch_size=32,
    learning_rate=1e-3,  # Algorithm 8.6's global rate (RMSprop + Nesterov momentum 0.9, rho 0.9)
    lr_schedule="cosine",  # decay to 0: the last epochs settle instead of bouncing on 443 songs
    gain_db=6.0,  # random gain +-6 dB per crop: GTZAN's levels vary by source, not by genre
    conv_dropout=0.1,
    final_dropout=0.5,  # more than the default 0.3: one thousand clips overfit quickly
    log_every=14,  # about once an epoch on the full split
    eval_every=0,  # validation songs once an epoch
    checkpoint_every=280,  # about every 20 epochs
)
