"""`python -m crnn_jax.train` (= `crnn-jax train`): train a CRNN or CNN genre classifier, evaluate it by song,
write a report.

    python -m crnn_jax.train                                  # built-in synthetic music, a few minutes on CPU
    python -m crnn_jax.train --config experiments/gtzan.py --data /path/to/genres
    python -m crnn_jax.train --workdir runs/x                 # again: resumes from the newest checkpoint
    python -m crnn_jax.train --coordinator HOST:PORT --num-processes 2 --process-id 0   # and 1 on host 2:
                                                              # one run over several hosts (docs/distributed.md)

The workdir gets config.json, metrics.jsonl, checkpoints/ (orbax), results.json, confusion.png, curves.png
(crnn_jax/training/loop.py). Every random choice is a function of (seed, step), so a run killed at any point
and started again with the same workdir ends with exactly the metrics of a run never interrupted.
"""

from __future__ import annotations

import argparse
import sys

from crnn_jax import cmdline
from crnn_jax.config import Config
from crnn_jax.training import distributed as dist
from crnn_jax.training import workdir as workdir_lib

PROG = "crnn_jax.train"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, parsed without touching JAX (distributed.initialize must come first)."""
    p = cmdline.Parser("crnn-jax train", __doc__.split("\n")[0].split(": ", 1)[1] + " Flags override the --config "
                       "preset (or the default for this machine) field by field; the defaults shown are a plain run's.")
    cmdline.add_training_flags(p)
    dist.add_flags(p)  # launch parameters: not Config fields, never in config.json
    return p.parse_args(argv)


def parse_config(argv: list[str] | None = None) -> Config:
    """Flags -> Config (cmdline.config_of); launch flags are accepted and left out."""
    import jax

    return cmdline.config_of(parse_args(argv), jax.default_backend)


def main(argv: list[str] | None = None) -> int:
    def work(args: argparse.Namespace) -> None:
        import jax

        from crnn_jax.training import loop

        dist.initialize(dist.launch_of(args))  # before any other JAX call, jax.default_backend() included
        args.cfg = cmdline.config_of(args, jax.default_backend)
        loop.train_members(args.cfg)  # one network, or each of an ensemble (--set ensemble=M)

    cfg_of = lambda args: getattr(args, "cfg", None)  # noqa: E731  (None until the flags made a Config)
    return cmdline.run(PROG, lambda: parse_args(argv), work, places=lambda args: workdir_lib.places(cfg_of(args)),
                       oom_advice=lambda args: workdir_lib.oom_advice(cfg_of(args)),
                       interrupted="rerun with the same --workdir to resume")


if __name__ == "__main__":
    sys.exit(main())
