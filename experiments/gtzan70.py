"""Small-data CPU recipe: the CRNN at CPU width with SpecAugment, mixup and label smoothing, trained for
1,680 steps on every training song, tuned on 70 real GTZAN clips (7 per genre) by 5-fold evaluation by
song against MFCC+SVM on the same folds.

    python -m crnn_jax.cv --config experiments/gtzan70.py --data ../shared/data/gtzan-70 --folds 5 --seeds 0,1 \
        --out runs/cv70-final
    ... --model cnn --out runs/cv70-cnn-final          # the CNN with the same recipe
    python -m crnn_jax.train --config experiments/gtzan70.py --data /path/to/your/genres --split random
                                                    # one run on your own folder of genre sub-folders

What it measured (experiments/README.md, "70 real GTZAN clips", has every row, its command and fold times):
song accuracy over 5 folds of 14 test songs, mean +- std over folds, seeds 0 and 1: CRNN 0.814 +- 0.080
(seed 0, on which it was tuned, 0.800; seed 1 0.829) and MFCC+SVM on the same folds (same 56 training
songs) 0.750 +- 0.086, paired difference +0.064 +- 0.114: **the CRNN leads MFCC+SVM, but by less than the
spread between folds**. On an Intel Xeon instead of the AMD EPYC the same command gave 0.793 +- 0.113
(XLA's CPU code differs by processor: another run), and an ensemble of two networks a fold
(`--set ensemble=2`, rows 19-21) 0.800 +- 0.094 against its members' 0.796: not on here. The CNN with this recipe: 0.800 +- 0.060 (seed 0). Adjacent GTZAN clips share artists and albums and these folds do not keep
them apart: this is "a new song of a known artist", not artist-filtered genre recognition.

Choices (each measured, experiments/README.md): CPU width 32/64/64/64; 3 s crops, evaluation every 1.5 s;
SpecAugment 2 time masks of up to 16 frames (of ~130) and 2 mel masks of up to 12 bands (of 96), waveform
mixup alpha 0.2, label smoothing 0.1; no validation songs (valid_fraction 0): one song per genre was too
few to select a checkpoint on (testing the best validation pass was as often worse as better), so the
last state is tested and the 10 songs go back into training (46 -> 56); 1,680 steps (420 epochs of 4
steps at batch 16): four times the previous 420, the largest lever measured (0.671 -> 0.800 on seed 0).
A fold took 8-10 minutes on 2 cores with a second fold running beside them (measured), about 6 alone
(4 x the 87-104 s of a 420-step fold measured alone); a GPU would make the Choi-size model (gtzan.py's
64/128/128/128), more steps, ten folds and more seeds affordable.
"""

from crnn_jax.config import Config

config = Config(
    data="../shared/data/gtzan-70",  # 70 GTZAN clips, 7 per genre; give another folder with --data
    split="kfold:5",  # crnn_jax.cv sets kfold:K and the fold itself; use --split random for crnn_jax.train
    sample_rate=22050,
    model="crnn",
    conv_channels=(32, 64, 64, 64),  # the CPU preset's width (Choi's 64/128/128/128 is ~4x the work)
    gru_units=(32, 32),
    crop_seconds=3.0,
    eval_hop_seconds=1.5,  # 19 overlapping windows per 30 s clip at evaluation
    valid_fraction=0.0,  # no validation songs: the last state is tested (see above), 56 training songs a fold
    epochs=420,  # 56 training songs at batch 16: 4 steps an epoch, 1,680 steps (420 steps: 0.671, measured)
    batch_size=16,
    learning_rate=1e-3,
    lr_schedule="cosine",
    gain_db=6.0,
    conv_dropout=0.1,
    final_dropout=0.5,
    spec_time_masks=2,
    spec_time_mask_frames=16,  # of ~130 frames in a 3 s crop
    spec_freq_masks=2,
    spec_freq_mask_bins=12,  # of 96 mel bands
    mixup_alpha=0.2,  # on waveforms (augment.py says why)
    label_smoothing=0.1,
    test_checkpoint="last",  # one validation song per genre was too few to select on (table)
    steps_per_call=10,
    log_every=10,
    eval_every=20,  # validation passes, when a --set valid_fraction=... asks for validation songs
    checkpoint_every=100,
)
