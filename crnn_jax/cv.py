"""`crnn-jax cv` (= `python -m crnn_jax.cv`): k-fold evaluation by song, every fold and seed from one command, beside MFCC+SVM.

    python -m crnn_jax.cv --config experiments/gtzan70.py --data ../shared/data/gtzan-70 --folds 5 --seeds 0,1 \
        --out runs/cv-crnn
    ... --model cnn --out runs/cv-cnn                 # any crnn_jax.train flag is passed on to every fold
    ... --set spec_freq_masks=2 --set mixup_alpha=0.2 # any Config field, by name
    ... --set ensemble=2                              # two networks a fold, scored as one (below)
    (the same command again resumes: finished folds are skipped, an interrupted one resumes from its checkpoint)

Every (seed, fold) is one crnn_jax.train run in its own workdir OUT/seed<s>-fold<i>, with --split kfold:K
--fold i --seed s: the songs of each genre are dealt to K folds (splits.kfold_split, shuffled by the seed,
so every seed is another partition: repeated k-fold), fold i is the test part, and the validation songs
(valid_fraction of each genre) come from the other K-1 folds, never from the test fold. Then the MFCC+SVM
baseline (crnn_jax/kfold/baseline.py) is fitted on the same training songs, C chosen on the same validation songs,
and scored on the same test songs (OUT/seed<s>-fold<i>/baseline_mfcc_svm.json).

With ensemble=M (a Config field, so a preset can hold it) every fold trains M networks on the same
split, member m in OUT/seed<s>-fold<i>-m<m> (member 0 in OUT/seed<s>-fold<i>, as without an ensemble),
each with its own initialisation, crops, dropout and augmentation (Config.train_seed); a test song's
score is the members' mean song log-probability, and the summary gives the members' own accuracy beside.

OUT/summary.json and OUT/summary.md: song-level test accuracy per seed and fold for the network and the
baseline; mean over all runs ± the spread between folds (sample std over a seed's folds, pooled over seeds)
and between seeds (sample std of the per-seed means); the paired difference network - baseline, by fold and,
per seed, by song (an exact McNemar test over the songs only one of the two got right); the pooled confusion
matrix over all test songs of all runs and per-genre recall from it (OUT/summary-confusion.png,
OUT/summary-confusion-baseline.png); wall time per fold with the load average at its end
(crnn_jax/kfold/summary.py writes them; the driver is crnn_jax/kfold/driver.py). Folds keep songs apart, not artists: on GTZAN-like data a fold measures
"a new song of a possibly known artist".
"""

from __future__ import annotations

import argparse
import os
import sys

from crnn_jax import cmdline
from crnn_jax.errors import ConfigError

PROG = "crnn_jax.cv"
# The driver sets these per run (split, fold, seed and workdir in kfold.driver.run_config, member for an
# ensemble); named here so that --help starts without JAX.
OWNED = {"split": "--folds", "fold": "--folds", "seed": "--seeds", "workdir": "--out", "member": "--set ensemble=M"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cmdline.Parser("crnn-jax cv", __doc__.split("\n")[0].split(": ", 1)[1])
    p.add_argument("--folds", type=int, default=5, help="K of the k-fold split")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1")
    p.add_argument("--out", help="folder for the fold workdirs and the summary (default runs/cv-<model>-<data>)")
    p.add_argument("--no-baseline", action="store_true", help="skip the MFCC+SVM baseline")
    cmdline.add_training_flags(p, owned=OWNED)
    args = p.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r}: give comma-separated integers, e.g. --seeds 0,1") from None
    if not args.seeds or len(set(args.seeds)) != len(args.seeds):
        raise ConfigError("--seeds: give one or more distinct integers, e.g. --seeds 0,1")
    if args.folds < 2:
        raise ConfigError(f"--folds {args.folds}: K must be >= 2")
    return args


def _backend() -> str:
    """The backend the folds train on (the default preset follows it, as in crnn-jax train); imported late so
    that --help starts without JAX."""
    import jax

    return jax.default_backend()


def evaluate(args: argparse.Namespace) -> None:
    """Every (seed, fold) trained or resumed, scored beside MFCC+SVM, summarised (kfold.driver.run_all)."""
    cfg = cmdline.config_of(args, _backend, owned=OWNED)
    if cfg.data == "synthetic":
        raise ConfigError("--data: k-fold evaluation needs a folder of genre sub-folders (or tfds:gtzan); "
                          "the built-in synthetic set has its own random split")
    if not args.no_baseline:  # checked before any fold trains: the baseline needs scikit-learn
        try:
            import sklearn  # noqa: F401
        except ImportError:
            raise ConfigError("the MFCC+SVM baseline needs scikit-learn: pip install 'crnn_jax[kfold]', or pass "
                              "--no-baseline") from None
    from crnn_jax.kfold import driver
    from crnn_jax.kfold.summary import plus_minus as pm

    driver.compilation_cache(cfg)
    args.out = args.out or os.path.join("runs", f"cv-{cfg.model}-{cfg.data_name()}")
    s = driver.run_all(cfg, args.out, args.folds, args.seeds, with_baseline=not args.no_baseline)
    print(f"{s['model'].upper()} {pm(s['network'])}"
          + (f"; MFCC+SVM {pm(s['baseline'])}; difference {pm(s['difference'])}" if "baseline" in s else "")
          + f"; summary in {os.path.join(args.out, 'summary.md')}")
    if cfg.data != "synthetic":  # what the folds measure (artists on both sides, unless grouped): said once, last
        print(f"note: {s['note']}")


def main(argv: list[str] | None = None) -> int:
    return cmdline.run(PROG, lambda: parse_args(argv), evaluate, places=lambda args: [("--out", (args and args.out) or "runs")],
                       interrupted="run the same command again to resume")


if __name__ == "__main__":
    sys.exit(main())
