"""A user's library through a Predictor: files and folders -> one prediction per song, as lines, JSON, a CSV
table and genre playlists (what `crnn-jax predict` does).

Files are decoded one after another (once each, mono, at the model's rate) behind a progress bar, so memory
is one song plus one batch of windows however large the library. A file that does not decode is one line and
skipped; the rest are still predicted. Outputs go only where the user named them (--csv, --plot,
--playlists); nothing is written beside the audio.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass

from crnn_jax.files import unwritable
from crnn_jax.data import folders
from crnn_jax.errors import ConfigError, DataError
from crnn_jax.inference import playlists
from crnn_jax.inference.predictor import Predictor, plot_timeline, read_song


@dataclass(frozen=True)
class Outputs:
    """Where the results go. top: genres listed per file; as_json: one JSON document instead of lines; csv:
    a table (path, genre, probability, one column per genre); plot: one song's timeline (PNG); playlists: a
    folder of <genre>.m3u8; min_probability: below it a song goes to unsure.m3u8."""

    top: int = 3
    as_json: bool = False
    csv: str | None = None
    plot: str | None = None
    playlists: str | None = None
    min_probability: float | None = None

    def check(self, n_inputs: int, first_is_dir: bool) -> None:
        """ConfigError (one line) for outputs that cannot be made, before any work."""
        if self.top < 1:
            raise ConfigError(f"--top must be >= 1, got {self.top}")
        if self.plot and (n_inputs != 1 or first_is_dir):
            raise ConfigError("--plot draws one song's timeline; " + (f"got {n_inputs} files" if n_inputs != 1
                                                                     else "the argument is a folder"))
        if self.csv and os.path.isdir(self.csv):
            raise ConfigError(f"--csv {self.csv} is a folder; name the file to write")
        for flag, path in (("--csv", self.csv), ("--plot", self.plot)):
            why = path and unwritable(path)
            if why:
                raise ConfigError(f"{flag} {path}: {why}; name a file in a folder that exists and can be written")
        if self.plot:
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            kinds = FigureCanvasAgg.get_supported_filetypes()
            ext = os.path.splitext(self.plot)[1].lstrip(".").lower()
            if ext not in kinds:
                raise ConfigError(f"--plot {self.plot}: matplotlib cannot write a .{ext or '(no extension)'} file; "
                                  f"end the name in .png (or {', '.join(sorted(k for k in kinds if k != 'png'))})")
        if self.min_probability is not None and not self.playlists:
            raise ConfigError("--min-probability sorts unsure songs into unsure.m3u8: give --playlists DIR too")
        if self.min_probability is not None and not 0.0 <= self.min_probability <= 1.0:
            raise ConfigError(f"--min-probability must be in [0, 1], got {self.min_probability}")


def predict_library(predictor: Predictor, paths: list[str], out: Outputs, *, say=print) -> int:
    """Every audio file of `paths` (files as named, folders walked: data.folders.audio_files) through
    `predictor`, written to `out` -> exit status: 0 every file predicted, 1 some failed (each named on one
    line on stderr, the rest predicted). DataError when no audio file is found, ConfigError for outputs that
    cannot be written (checked before any prediction)."""
    from tqdm.auto import tqdm

    out.check(len(paths), bool(paths) and os.path.isdir(paths[0]))
    files, skipped = folders.audio_files(paths)
    if not files:
        raise DataError(f"no audio files ({', '.join(folders.AUDIO_EXTS)}) in {', '.join(paths)}")
    if out.playlists:
        playlists.check_playlist_dir(out.playlists, files)
    if skipped:
        say("crnn_jax.predict: skipped " + f"{sum(skipped.values())} non-audio file(s) in the folders ("
            + ", ".join(f"{n} {ext}" for ext, n in sorted(skipped.items())) + ")")
    table = _CsvTable(out.csv, predictor.class_names) if out.csv else None
    docs, songs, failed = [], [], 0
    bar = tqdm(files, unit="file", disable=not sys.stderr.isatty(), dynamic_ncols=True)
    try:
        for path in bar:
            try:
                res = predictor.predict(read_song(path, predictor.sample_rate), top=out.top)
            except (DataError, ValueError) as e:
                bar.write(f"crnn_jax.predict: error: {e if path in str(e) else f'{path}: {e}'}", file=sys.stderr)
                failed += 1
                continue
            probs = [res["probabilities"][c] for c in predictor.class_names]
            songs.append(playlists.Song(path, probs, res["seconds"]))
            if out.plot:
                plot_timeline(res, predictor.class_names, out.plot, os.path.basename(path))
            if table:
                table.row(path, res["top"][0], probs)
            if out.as_json:
                docs.append({"file": path, "top": res["top"], "probabilities": res["probabilities"],
                             "windows": res["windows"], "seconds": res["seconds"]})
            else:
                bar.write(f"{path}: " + ", ".join(f"{t['genre']} {t['probability']:.2f}" for t in res["top"]),
                          file=sys.stdout)
    finally:
        bar.close()
        if table:
            table.close()
    if out.as_json:
        print(json.dumps(docs, indent=1))
    if out.playlists and songs:
        counts = playlists.write_playlists(out.playlists, songs, predictor.class_names,
                                           min_probability=out.min_probability)
        say(f"crnn_jax.predict: wrote {len(counts)} playlist(s) to {out.playlists} ("
            + ", ".join(f"{name[:-len(playlists.SUFFIX)]} {n}" for name, n in sorted(counts.items())) + ")")
    if failed:
        rest = "nothing was predicted" if failed == len(files) else "the rest were predicted"
        say(f"crnn_jax.predict: {failed} of {len(files)} file(s) failed (named above); {rest}")
    return 1 if failed else 0


class _CsvTable:
    """One row per predicted file, flushed as files finish (a long run can be watched, or stopped, midway)."""

    def __init__(self, path: str, class_names: tuple[str, ...]):
        self.f = open(path, "w", newline="")
        self.w = csv.writer(self.f)
        self.w.writerow(["path", "genre", "probability", *class_names])

    def row(self, path: str, best: dict, probs: list[float]) -> None:
        self.w.writerow([path, best["genre"], f"{best['probability']:.6f}", *(f"{p:.6f}" for p in probs)])
        self.f.flush()

    def close(self) -> None:
        self.f.close()
