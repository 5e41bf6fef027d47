"""`crnn-jax predict`: the genres of your own songs, from a trained workdir or a model file.

    crnn-jax predict --workdir runs/crnn-genres-seed0 song.wav other.m4a    # = python -m crnn_jax.predict
    crnn-jax predict --model genres.crnn ~/Music --csv genres.csv           # folders, searched recursively
    crnn-jax predict --model genres.crnn ~/Music --playlists ~/Playlists    # one <genre>.m3u8 per genre
    crnn-jax predict --workdir RUN song.wav --json                          # one JSON document
    crnn-jax predict --workdir RUN song.wav --plot timeline.png

How a song is scored: crnn_jax/inference/predictor.py; the library loop: crnn_jax/inference/library.py.
Exit status 0: every audio file predicted; 1: some file failed (each named on one line on stderr, the rest
predicted); 2: bad flags, workdir, model file or output, or no audio file found (nothing predicted).
"""

from __future__ import annotations

import argparse
import os
import sys

from crnn_jax import cmdline

PROG = "crnn_jax.predict"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from crnn_jax.data.folders import AUDIO_EXTS
    from crnn_jax.inference.predictor import DEFAULT_BATCH

    p = cmdline.Parser("crnn-jax predict", __doc__.split("\n")[0].split(": ", 1)[1])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", metavar="RUN", action="append", help="a training run's workdir, relative or "
                     "absolute (its tested checkpoint); repeat it for an ensemble of runs (their mean log-probability)")
    src.add_argument("--model", metavar="FILE", help="a model file written by `crnn-jax export`")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help=f"audio files, or folders searched recursively for {'/'.join(AUDIO_EXTS)} "
                        "(hidden files and folders skipped)")
    p.add_argument("--top", type=int, default=3, help="genres listed per file")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    p.add_argument("--csv", metavar="CSV", help="also write one row per audio file: path, genre, probability, "
                   "then one probability column per genre (default: no table)")
    p.add_argument("--plot", metavar="PNG", help="genre probabilities over time (one file only; default: no plot)")
    p.add_argument("--playlists", metavar="DIR", help="write one <genre>.m3u8 per genre into DIR (new, empty, or "
                   "holding only playlists this command wrote), paths relative to DIR (default: none)")
    p.add_argument("--min-probability", type=float, metavar="P", help="with --playlists: songs whose top genre "
                   "is below P go to unsure.m3u8 (default: every song in its top genre's playlist)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="windows per forward call")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        raise cmdline.ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    return args


def main(argv: list[str] | None = None) -> int:
    def work(args: argparse.Namespace) -> int:
        from crnn_jax.inference import library, predictor

        out = library.Outputs(top=args.top, as_json=args.json, csv=args.csv, plot=args.plot,
                              playlists=args.playlists, min_probability=args.min_probability)
        out.check(len(args.files), os.path.isdir(args.files[0]))  # before a model is loaded
        model = (predictor.Predictor.from_file(args.model, batch_size=args.batch_size) if args.model
                 else predictor.load_models(args.workdir, batch_size=args.batch_size))
        return library.predict_library(model, args.files, out, say=lambda m: print(m, file=sys.stderr))

    return cmdline.run(PROG, lambda: parse_args(argv), work, places=lambda args: [
        (flag, path) for flag, path in (("--csv", args and args.csv), ("--playlists", args and args.playlists),
                                        ("--plot", args and args.plot)) if path])


if __name__ == "__main__":
    sys.exit(main())
