"""Evaluation shared by train, predict and `crnn-jax evaluate`: windows -> song scores -> report.

    crnn-jax evaluate --model model.crnn --data /path/to/genres --out eval/      # = python -m crnn_jax.evaluate
    crnn-jax evaluate --workdir runs/crnn-genres-seed0 --data /path/to/genres --split fault-filtered --out eval/
    crnn-jax evaluate --model model.crnn --data new_songs/ --part all --out eval-new/

A song is scored as training's test pass scores it: every evaluation window (data.eval_windows: the
training crop, hop = eval hop) through the network in fixed-size batches, the window log-probabilities
averaged over the song, argmax = the song's genre (report.evaluate_scores). `--out` receives
results.json (song and window accuracy, per-class precision/recall/F1, confusion matrices) and
confusion.png; the model's workdir is never written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Iterator

import jax
import numpy as np

from crnn_jax.data import dataset as data_lib
from crnn_jax.cli import HelpFormatter
from crnn_jax import model as model_lib
from crnn_jax.training import report
from crnn_jax.training import steps as steps_lib
from crnn_jax.config import Config, ConfigError
from crnn_jax.data.dataset import DataError


def padded_batches(w_song: np.ndarray, w_off: np.ndarray, batch: int
                   ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Windows [W] (song ids, offsets in samples) in batches of exactly `batch` -> (songs [batch],
    offsets [batch], n real). The last batch is padded with copies of its last window (their outputs are
    dropped by the caller), so every call has one shape and compiles once."""
    for i in range(0, len(w_song), batch):
        s, o = w_song[i:i + batch], w_off[i:i + batch]
        n, pad = len(s), batch - len(s)
        yield np.concatenate([s, np.repeat(s[-1:], pad)]), np.concatenate([o, np.repeat(o[-1:], pad)]), n


def dataset_crops(ds: data_lib.Dataset, songs: np.ndarray, offsets: np.ndarray, crop: int) -> np.ndarray:
    """The one place evaluation cuts crops from a Dataset: songs/offsets [b] -> int16 [b, crop]."""
    return ds.crops(songs, offsets, crop)


def song_crops(song: np.ndarray, offsets: np.ndarray, crop: int) -> np.ndarray:
    """Windows of one song: song int16 [samples >= offsets.max() + crop], offsets [b] -> int16 [b, crop]."""
    return song[offsets[:, None] + np.arange(crop)[None, :]]


def song_probabilities(mean_log_probs: np.ndarray, head: str) -> np.ndarray:
    """A song's mean window log-probabilities [C] -> genre probabilities [C]. Softmax head: renormalised
    (the geometric mean of the windows' distributions; sums to 1). Sigmoid head: exp per class (each
    genre's own geometric-mean probability; the genres are independent outputs)."""
    mean = np.asarray(mean_log_probs, np.float64)
    return np.exp(mean - np.logaddexp.reduce(mean)) if head == "softmax" else np.exp(mean)


class Evaluator:
    """Every window of the given songs through the pmapped eval step -> report.evaluate_scores dict.

    p_eval: `parallel` of make_eval_step(gather=True). n_devices: of the whole run; local: (first, count),
    this process's devices (default all): it slices only their windows' crops, and the gathered outputs
    give every process every window's scores.
    """

    def __init__(self, cfg: Config, ds: data_lib.Dataset, p_eval, n_devices: int,
                 local: tuple[int, int] | None = None):
        self.cfg, self.ds, self.p_eval, self.n_devices = cfg, ds, p_eval, n_devices
        per_device = max(1, -(-max(cfg.batch_size, 64) // n_devices))
        self.batch = n_devices * per_device  # windows per call, over all devices
        first, self.n_local = local or (0, n_devices)
        self.rows = slice(first * per_device, (first + self.n_local) * per_device)  # this process's windows

    def __call__(self, state, songs: np.ndarray) -> dict:
        cfg, ds = self.cfg, self.ds
        w_song, w_off = data_lib.eval_windows(ds.lengths, songs, crop=cfg.crop_samples, hop=cfg.eval_hop_samples)
        out = []
        for s, o, n in padded_batches(w_song, w_off, self.batch):
            s, o = s[self.rows], o[self.rows]
            crops = dataset_crops(ds, s, o, cfg.crop_samples)
            batch = {"crops": steps_lib.shard(crops, self.n_local),
                     "gains": steps_lib.shard(np.ones(len(s), np.float32), self.n_local)}
            logp = np.asarray(self.p_eval(state, batch))[0]  # first local device's copy: [devices, per_device, classes]
            out.append(logp.reshape(-1, logp.shape[-1])[:n])  # [windows, classes]
        return report.evaluate_scores(np.concatenate(out), w_song, songs, ds.labels, ds.class_names)


def score(cfg: Config, state, ds: data_lib.Dataset, songs: np.ndarray) -> dict:
    """A trained state (params, batch_stats) scored on `songs` of `ds` with every device of this (single)
    process, exactly as train() scores its test split -> report.evaluate_scores dict."""
    net = model_lib.build_model(cfg, len(ds.class_names), axis_name=steps_lib.AXIS)
    p_eval = steps_lib.parallel(steps_lib.make_eval_step(net, head=cfg.head, gather=True), state_out=False)
    return Evaluator(cfg, ds, p_eval, jax.device_count())(steps_lib.place_state(state), songs)


def relabel(ds: data_lib.Dataset, class_names: tuple[str, ...]) -> data_lib.Dataset:
    """The data set's labels renumbered to the model's genre order. DataError when the data holds a
    genre the model has no output for."""
    if tuple(ds.class_names) == tuple(class_names):
        return ds
    unknown = [c for c in ds.class_names if c not in class_names]
    if unknown:
        raise DataError(f"--data has genre(s) {', '.join(unknown)} that the model does not know "
                        f"(its genres: {', '.join(class_names)})")
    index = np.array([class_names.index(c) for c in ds.class_names], np.int32)
    return dataclasses.replace(ds, labels=index[ds.labels], class_names=tuple(class_names))


# --- command line ------------------------------------------------------------------------------------------
PARTS = ("test", "valid", "train", "all")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line naming the problem, not the usage block
        raise ConfigError(message)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _Parser(prog="crnn-jax evaluate", description=__doc__.split("\n")[0],
                formatter_class=HelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="FILE", help="a model file written by `crnn-jax export`")
    src.add_argument("--workdir", metavar="RUN", help="a training workdir (its newest checkpoint)")
    p.add_argument("--data", default=None,
                   help="a folder of genre sub-folders, 'synthetic' or 'tfds:gtzan' (default: the model's own data)")
    p.add_argument("--split", default=None,
                   help="random | fault-filtered | kfold:K | a folder with train/valid/test.txt "
                        "(default: the model's own split, seed and fractions)")
    p.add_argument("--fold", type=int, default=None, help="test fold with --split kfold:K (default: the model's)")
    p.add_argument("--part", choices=PARTS, default="test",
                   help="which songs of the split to score; 'all' for a folder of songs the model never saw")
    p.add_argument("--cache-dir", default=None, help="decoded-audio cache folder (default ~/.cache/crnn_jax)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for results.json and confusion.png (created; never inside the model's workdir)")
    return p.parse_args(argv)


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_out(out: str, workdir: str | None, model: str | None) -> None:
    """Refuse an --out that would write into the training workdir or over anything that is not ours."""
    if workdir and _inside(out, workdir):
        raise ConfigError(f"--out {out} is inside the training workdir {workdir}; evaluation never writes "
                          "there: name another folder")
    if model and os.path.realpath(out) == os.path.realpath(model):
        raise ConfigError(f"--out {out} is the model file; name a folder")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out} is a file; name a folder")
    if os.path.isdir(out):
        foreign = sorted(set(os.listdir(out)) - {"results.json", "confusion.png"})
        if foreign:
            raise ConfigError(f"--out {out} already holds other files ({foreign[0]}, ...); name a new or empty "
                              "folder (or one an earlier evaluation wrote)")


def _write_json(path: str, doc: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def run(args: argparse.Namespace, log=print) -> dict:
    """The evaluate command's work: load the model and data, score, write --out -> the results dict."""
    from crnn_jax import predict  # model loading (workdir or file) lives with the predict command
    from crnn_jax.train import load_data  # the same data loading and split as training

    check_out(args.out, args.workdir, args.model)
    predictor = predict.Predictor.from_file(args.model) if args.model else predict.load_model(args.workdir)
    changes = {k: v for k, v in (("data", args.data), ("split", args.split), ("fold", args.fold),
                                 ("cache_dir", args.cache_dir)) if v is not None}
    cfg = predictor.cfg.replace(**changes)
    if args.part == "all" and cfg.data != "synthetic":  # every song: no split to make (a folder too small for one is fine)
        from crnn_jax.data import loaders

        load_fn = loaders.load_tfds if cfg.data.startswith("tfds:") else loaders.load_folder
        ds, split = load_fn(cfg.data, sample_rate=cfg.sample_rate, cache=cfg.cache_dir), None
    else:
        ds, split = load_data(cfg)
    ds = relabel(ds, predictor.class_names)
    songs = np.arange(len(ds), dtype=np.int64) if args.part == "all" else split[args.part]
    if not len(songs):
        raise DataError(f"the {args.part} part of split {cfg.split!r} of {cfg.data} holds no songs; "
                        "choose another --part or --split")
    log(f"evaluate: {args.model or args.workdir} on {cfg.data} ({args.part} part of split {cfg.split}: "
        f"{len(songs)} songs)")
    ev = score(cfg, predictor.state, ds, songs)
    results = {"model": args.model or args.workdir, "data": cfg.data, "split": cfg.split, "fold": cfg.fold,
               "part": args.part, "accuracy": ev["accuracy"], "window_accuracy": ev["window_accuracy"],
               "n_songs": ev["n_songs"], "class_names": list(ds.class_names),
               "songs": [ds.names[i] for i in songs], args.part: ev}
    os.makedirs(args.out, exist_ok=True)
    _write_json(os.path.join(args.out, "results.json"), results)
    report.plot_confusion(np.array(ev["confusion"]), ds.class_names, os.path.join(args.out, "confusion.png"),
                          f"{cfg.model.upper()} {args.part} songs: accuracy {ev['accuracy']:.3f} "
                          f"(n={ev['n_songs']})")
    log(f"accuracy {ev['accuracy']:.4f} by song ({ev['n_songs']} songs), {ev['window_accuracy']:.4f} by window; "
        f"results in {args.out}")
    return results


def main(argv: list[str] | None = None) -> int:
    """Exit 0: scored; 2: bad flags, model or data (one line on stderr)."""
    try:
        run(parse_args(argv))
    except (ConfigError, DataError) as e:
        print(f"crnn_jax.evaluate: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # --out unwritable or the disk full: the results were not written
        print(f"crnn_jax.evaluate: error: cannot write {e.filename or 'the results'} ({e.strerror or e}); "
              "name another --out", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
