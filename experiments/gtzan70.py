"""Small-data CPU recipe: the CRNN at CPU width on a few dozen real clips, tuned on gtzan-70 by 5-fold evaluation.

    python -m crnn_jax.cv --config experiments/gtzan70.py --data ../shared/data/gtzan-70 --folds 5 --seeds 0 \
        --out runs/cv70-crnn
    ... --model cnn --out runs/cv70-cnn          # the CNN with the same recipe

TUNING IN PROGRESS: the settings below are the baseline recipe (no augmentation but random gain); the table
of what each choice did is in experiments/README.md.
"""

from crnn_jax.config import Config

config = Config(
    data="../shared/data/gtzan-70",  # 70 GTZAN clips, 7 per genre; give another folder with --data
    split="kfold:5",  # crnn_jax.cv sets kfold:K and the fold itself
    sample_rate=22050,
    model="crnn",
    conv_channels=(32, 64, 64, 64),  # the CPU preset's width (Choi's 64/128/128/128 is ~4x the work)
    gru_units=(32, 32),
    crop_seconds=3.0,
    eval_hop_seconds=1.5,  # 19 overlapping windows per 30 s clip at evaluation
    epochs=70,  # 46 training songs at batch 16: 3 steps an epoch, 210 steps
    batch_size=16,
    learning_rate=1e-3,
    lr_schedule="cosine",
    gain_db=6.0,
    conv_dropout=0.1,
    final_dropout=0.5,
    steps_per_call=10,
    log_every=10,
    eval_every=20,  # validation songs every 20 steps (a multiple of steps_per_call: calls of one length)
    checkpoint_every=100,
    test_checkpoint="last",  # the baseline recipe tests the last state
)
