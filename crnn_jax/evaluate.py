"""`crnn-jax evaluate`: score a trained model on a folder or split, report into a new folder.

    crnn-jax evaluate --model model.crnn --data /path/to/genres --out eval/      # = python -m crnn_jax.evaluate
    crnn-jax evaluate --workdir runs/crnn-genres-seed0 --data /path/to/genres --split fault-filtered --out eval/
    crnn-jax evaluate --model model.crnn --data new_songs/ --part all --out eval-new/
    crnn-jax evaluate --workdir runs/a --workdir runs/b --out eval-ab/        # two runs as one ensemble

A song is scored as training's test pass scores it (crnn_jax/training/evaluator.py); the work is
crnn_jax/inference/evaluation.py. `--out` receives results.json and confusion.png; the model's workdir is
never written. Exit status 0: scored; 2: bad flags, model or data (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys

from crnn_jax import cmdline

PROG = "crnn_jax.evaluate"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cmdline.Parser("crnn-jax evaluate", __doc__.split("\n")[0].split(": ", 1)[1])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="FILE",
                     help="a model file written by `crnn-jax export` (one; an ensemble is several --workdir)")
    src.add_argument("--workdir", metavar="RUN", action="append",
                     help="a training workdir (its tested checkpoint: best/ when the run tests the best one, else the "
                          "newest); give it several times to score an ensemble (each song: the members' mean "
                          "log-probability; data and split are the first one's)")
    p.add_argument("--data", default=None,
                   help="a folder of genre sub-folders, 'synthetic' or 'tfds:gtzan' (default: the model's own data)")
    p.add_argument("--split", default=None,
                   help="random | fault-filtered | kfold:K | a folder with train/valid/test.txt "
                        "(default: the model's own split, seed and fractions)")
    p.add_argument("--fold", type=int, default=None, help="test fold with --split kfold:K (default: the model's)")
    p.add_argument("--group-by", default=None, help=cmdline.HELP["group_by"].split(" (")[0] + " (default: the model's)")
    p.add_argument("--part", choices=("test", "valid", "train", "all"), default="test",
                   help="which songs of the split to score; 'all' for a folder of songs the model never saw")
    p.add_argument("--cache-dir", default=None, help="decoded-audio cache folder (default: the model's, else $CRNN_JAX_CACHE or ~/.cache/crnn_jax)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for results.json and confusion.png (created; never inside the model's workdir)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def work(args: argparse.Namespace) -> None:
        from crnn_jax.inference import evaluation

        changes = {k: getattr(args, k) for k in ("data", "split", "fold", "group_by", "cache_dir")
                   if getattr(args, k) is not None}
        evaluation.run(out=args.out, model=args.model, workdir=args.workdir, part=args.part, changes=changes)

    return cmdline.run(PROG, lambda: parse_args(argv), work, places=lambda args: [("--out", args.out if args else ".")])


if __name__ == "__main__":
    sys.exit(main())
