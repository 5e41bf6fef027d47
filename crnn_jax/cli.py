"""`crnn-jax COMMAND [flags]`: the one console script; each command is a module's main(argv).

    crnn-jax train [--config experiments/x.py] [flags]     = python -m crnn_jax.train
    crnn-jax predict --workdir RUN|--model FILE FILE...   = python -m crnn_jax.predict
    crnn-jax evaluate --model FILE --data DIR --out DIR   = python -m crnn_jax.evaluate
    crnn-jax export --workdir RUN --out model.crnn        = python -m crnn_jax.export
    crnn-jax cv --config experiments/x.py --data DIR      = python -m crnn_jax.cv
    crnn-jax bench mel|train|ingest                       = python -m crnn_jax.bench

`crnn-jax COMMAND --help` lists that command's flags. Modules are imported only when their command runs,
so `crnn-jax --help` starts without JAX.
"""

from __future__ import annotations

import importlib
import os
import sys


# command -> (module, one-line summary)
COMMANDS = {
    "train": ("crnn_jax.train", "train (or resume) a genre classifier, evaluate it by song, write a report"),
    "predict": ("crnn_jax.predict", "the genres of your songs or folders, from a workdir or a model file"),
    "evaluate": ("crnn_jax.evaluate", "score a trained model on a folder or split, report into a new folder"),
    "export": ("crnn_jax.export", "a training workdir -> one portable model file"),
    "cv": ("crnn_jax.cv", "k-fold evaluation by song: every fold and seed, beside MFCC+SVM, one summary"),
    "bench": ("crnn_jax.bench", "speed of the log-mel front end and of the training step"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: crnn-jax COMMAND [flags]   (crnn-jax COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        code = _run(sys.argv[1:] if argv is None else list(argv))
        sys.stdout.flush()  # a pipe's buffered output fails here, inside the try, not at exit
        return code
    except BrokenPipeError:  # `crnn-jax ... | head`: the reader has gone; no traceback for that
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's documented recipe
        return 1


def _run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"crnn-jax: error: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
