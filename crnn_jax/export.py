"""`crnn-jax export --workdir RUN --out model.crnn`: a trained model as one portable file.

    crnn-jax export --workdir runs/crnn-genres-seed0 --out genres.crnn     # = python -m crnn_jax.export
    crnn-jax predict --model genres.crnn song.mp3

The format: crnn_jax/inference/modelfile.py. Exit status 0: written; 2: bad flags, workdir or --out (one line
on stderr); 1: the disk refused (nothing is left behind).
"""

from __future__ import annotations

import argparse
import os
import sys

from crnn_jax import cmdline
from crnn_jax.errors import ConfigError

PROG = "crnn_jax.export"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cmdline.Parser("crnn-jax export", __doc__.split("\n")[0].split(": ", 1)[1])
    p.add_argument("--workdir", required=True, metavar="RUN", help="a training workdir (its tested checkpoint: best/ when the run tests the best one, else the newest)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the model file to write (by convention *.crnn); an existing model file is replaced")
    return p.parse_args(argv)


def write(args: argparse.Namespace) -> None:
    """Check --out (never another program's file), load the workdir's tested checkpoint, write the file."""
    from crnn_jax.inference import modelfile, predictor

    if os.path.isdir(args.out):
        raise ConfigError(f"--out {args.out} is a folder; name the file to write, e.g. {args.out}/model.crnn")
    if os.path.exists(args.out) and not modelfile.is_model_file(args.out):
        raise ConfigError(f"--out {args.out} exists and is not a crnn_jax model file; it is left alone: "
                          "name another file")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise ConfigError(f"--out {args.out}: folder {os.path.dirname(args.out)} does not exist")
    p = predictor.load_model(args.workdir)
    n = modelfile.write_model(args.out, p.cfg, p.class_names, p.state)
    print(f"{args.out}: {n / 1e6:.2f} MB, step {int(p.state.step)}, {len(p.class_names)} genres "
          f"({', '.join(p.class_names)})")


def main(argv: list[str] | None = None) -> int:
    return cmdline.run(PROG, lambda: parse_args(argv), write,
                       places=lambda args: [("--out", os.path.dirname(os.path.abspath(args.out)) if args else ".")])


if __name__ == "__main__":
    sys.exit(main())
