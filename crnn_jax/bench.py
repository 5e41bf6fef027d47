"""Speed measurements against peers, one subcommand each.

    python -m crnn_jax.bench mel [--batch 16] [--seconds 30] [--repeats 10] [--json FILE]
    python -m crnn_jax.bench train [--batch-sizes 4,32,256] [--crops 3,30] [--preset choi|cpu] [--json FILE]
    python -m crnn_jax.bench ingest FOLDER [--make N] [--workers 1,2] [--repeats R] [--json FILE]

`mel` (benchmarks/mel_speed.py): the jitted log-mel front end (mel.log_mel_spectrogram, default MelConfig) beside
librosa doing the same work clip by clip in the same run. `train` (benchmarks/train_step.py): the training call
train.py makes (steps.parallel(make_multi_step(make_train_step))) beside the PyTorch twin in
crnn_jax/benchmarks/torch_reference.py, same shapes, weights and inputs. `ingest` (benchmarks/ingest.py):
audio-hours per minute decoded from a folder into the cache with 1 and N worker processes, and peak RSS.
To add a subcommand, write a module with `add_args(parser)` and a runner, and register them in `_SUBCOMMANDS`.
"""

import argparse
import os
import sys

from crnn_jax.benchmarks import ingest as _ingest
from crnn_jax.benchmarks import mel_speed as _mel
from crnn_jax.benchmarks import train_step as _train

bench_mel = _mel.bench_mel
bench_train = _train.bench_train

# name -> (add its options, run it, one-line help)
_SUBCOMMANDS = {
    "mel": (_mel.add_args, bench_mel, "log-mel front end vs librosa"),
    "train": (_train.add_args, bench_train, "training step vs the PyTorch twin"),
    "ingest": (_ingest.add_args, _ingest.bench_ingest, "decoding a folder into the cache, 1 vs N processes"),
}


def main(argv=None):
    from crnn_jax import cmdline, files  # every flag's help ends with its default; failures are one line
    from crnn_jax.errors import ConfigError

    parser = argparse.ArgumentParser(prog="crnn-jax bench", description=__doc__.split("\n")[0],
                                     formatter_class=cmdline.HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, run, help_text) in _SUBCOMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, formatter_class=cmdline.HelpFormatter))
        sub.choices[name].set_defaults(func=run)

    def work(args: argparse.Namespace) -> None:
        why = getattr(args, "json", None) and files.unwritable(args.json)  # before minutes of measuring, not after
        if why:
            raise ConfigError(f"--json {args.json}: {why}; name a file in a folder that exists and can be written")
        try:
            args.func(args)
        except ValueError as e:  # a bad flag value
            raise ConfigError(str(e)) from None

    def places(args):
        return [("--json", os.path.dirname(os.path.abspath(args.json)))] if getattr(args, "json", None) else []

    return cmdline.run("crnn_jax.bench", lambda: parser.parse_args(argv), work, places=places)


if __name__ == "__main__":
    sys.exit(main())
