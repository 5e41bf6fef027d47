"""The classic genre baseline, MFCC statistics + an RBF SVM, on exactly the songs and split of a training run.

Used by experiments/baseline_mfcc_svm.py (one workdir) and crnn_jax.cv (every fold of a k-fold run, the
features of each song computed once and shared by all folds).

Features (no learning): every evaluation window of a song (the run's crop and eval hop, as the CRNN is
evaluated) -> log-mel in dB from crnn_jax.mel with the run's front-end settings -> 20 MFCCs = DCT-II
(scipy.fft.dct, norm="ortho") of the dB mel bands (librosa.feature.mfcc's DCT, on our HTK bands) -> deltas
(np.gradient over frames) -> mean and std over the window's frames: 80 numbers per window.
Two classifiers, both StandardScaler + SVC(kernel="rbf", gamma="scale"):
  windows: trained on training windows; a song's prediction is the argmax of the mean one-vs-rest decision
           value over its windows (the analogue of the CRNN's mean log-probability). -> "test_accuracy"
  songs:   one vector per song, mean and std over all its frames (Tzanetakis & Cook style). -> "test_accuracy_songs"
C is picked from (1, 10, 100) by validation song accuracy when the split has validation songs, else 10.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import NamedTuple

import jax
import numpy as np
import scipy.fft

from crnn_jax import files
from crnn_jax.data import dataset as data_lib
from crnn_jax import mel as mel_lib
from crnn_jax.training import report
from crnn_jax.training.evaluator import dataset_crops, padded_batches
from crnn_jax.config import Config, ConfigError
from crnn_jax.data.dataset import DataError

N_MFCC = 20
C_GRID = (1.0, 10.0, 100.0)
BATCH = 64  # windows per log-mel call (one compiled shape)


class Features(NamedTuple):
    """MFCC statistics of some songs. win [W, 80]: per window; w_song [W]: the window's song id (a Dataset
    row); songs [S]: the song ids, in order; song [S, 80]: per song, over all its frames."""

    win: np.ndarray
    w_song: np.ndarray
    songs: np.ndarray
    song: np.ndarray

    def subset(self, songs: np.ndarray) -> "Features":
        """The features of `songs` (a subset of self.songs), windows grouped by song in the order given."""
        pos = {int(s): i for i, s in enumerate(self.songs)}
        rows = np.array([pos[int(s)] for s in songs], np.int64)
        win_rows = np.concatenate([np.flatnonzero(self.w_song == s) for s in songs]) if len(songs) else \
            np.zeros(0, np.int64)
        return Features(self.win[win_rows], self.w_song[win_rows], np.asarray(songs, np.int64), self.song[rows])


def mfcc_frames(logmel: np.ndarray) -> np.ndarray:
    """dB log-mel [..., frames, n_mels] -> MFCCs and their deltas [..., frames, 2 * N_MFCC]."""
    c = scipy.fft.dct(logmel, type=2, norm="ortho", axis=-1)[..., :N_MFCC]  # [..., frames, N_MFCC]
    return np.concatenate([c, np.gradient(c, axis=-2)], axis=-1)


@functools.lru_cache(maxsize=4)
def _log_mel_fn(mel_cfg):
    return jax.jit(lambda x: mel_lib.log_mel_spectrogram(x, mel_cfg))


def song_features(cfg: Config, ds: data_lib.Dataset, songs: np.ndarray) -> Features:
    """MFCC statistics of the given songs' evaluation windows (cfg's crop and eval hop) -> Features."""
    songs = np.asarray(songs, np.int64)
    crop = cfg.crop_samples
    w_song, w_off = data_lib.eval_windows(ds.lengths, songs, crop=crop, hop=cfg.eval_hop_samples)
    logmel = _log_mel_fn(cfg.mel)
    frames = []  # per window: [frames, 40]
    for s, o, n in padded_batches(w_song, w_off, BATCH):  # one compiled shape
        x = dataset_crops(ds, s, o, crop).astype(np.float32) / data_lib.INT16_SCALE  # [BATCH, crop], as the CRNN sees it
        frames.append(mfcc_frames(np.asarray(logmel(x), np.float64))[:n])  # [n, frames, 40]
    f = np.concatenate(frames)  # [W, frames, 40]
    win = np.concatenate([f.mean(1), f.std(1)], axis=1)  # [W, 80]
    per_song = [f[w_song == s].reshape(-1, f.shape[-1]) for s in songs]  # each [frames of the song, 40]
    song = np.stack([np.concatenate([g.mean(0), g.std(0)]) for g in per_song])  # [S, 80]
    return Features(win, w_song, songs, song)


def fit(x: np.ndarray, y: np.ndarray, c: float):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(StandardScaler(), SVC(C=c, kernel="rbf", gamma="scale")).fit(x, y)


def song_predictions(clf, win: np.ndarray, w_song: np.ndarray, songs: np.ndarray) -> np.ndarray:
    """Argmax over classes of the mean one-vs-rest decision value of each song's windows -> labels [S]."""
    dec = clf.decision_function(win)
    dec = dec if dec.ndim == 2 else np.stack([-dec, dec], 1)  # two classes: sklearn returns one column
    mean = report.song_log_probs(dec, w_song, songs)  # [S, classes]: a plain per-song mean
    return clf.classes_[mean.argmax(-1)]


def evaluate(ds: data_lib.Dataset, split: dict[str, np.ndarray], feats: Features) -> dict:
    """Fit both baselines on split["train"], pick C on split["valid"], score split["test"] by song.

    feats: Features of (at least) every song of the split. -> {"test_accuracy" (windows classifier),
    "test_accuracy_songs", "C_windows", "C_songs", "confusion_windows", "confusion_songs",
    "test_predictions" (windows classifier, one label per test song), "n_train", "n_valid", "n_test", ...}.
    """
    parts = {k: feats.subset(v) for k, v in split.items() if len(v)}
    y = {k: ds.labels[v] for k, v in split.items()}
    train = parts["train"]

    def predict(kind: str, c: float, part: str) -> np.ndarray:
        if kind == "windows":
            clf = fit(train.win, ds.labels[train.w_song], c)
            return song_predictions(clf, parts[part].win, parts[part].w_song, split[part])
        return fit(train.song, y["train"], c).predict(parts[part].song)

    out = {"n_train": len(split["train"]), "n_valid": len(split["valid"]), "n_test": len(split["test"]),
           "class_names": list(ds.class_names)}
    for kind in ("windows", "songs"):
        c = max(C_GRID, key=lambda c: float((predict(kind, c, "valid") == y["valid"]).mean())) \
            if len(split["valid"]) else 10.0
        pred = predict(kind, c, "test")
        key = "test_accuracy" if kind == "windows" else "test_accuracy_songs"
        out.update({key: float((pred == y["test"]).mean()), f"C_{kind}": c, f"confusion_{kind}":
                    report.confusion(y["test"], pred, len(ds.class_names)).tolist()})
        if kind == "windows":
            out["test_predictions"] = pred.tolist()
    return out


def run(workdir: str, *, log=print) -> dict:
    """Fit and evaluate both baselines on RUN's split; writes RUN/baseline_mfcc_svm.json; returns its dict."""
    from crnn_jax.training import loop

    t0 = time.time()
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            cfg = Config.from_dict(json.load(f))
        with open(os.path.join(workdir, "split.json")) as f:
            split_names = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"--workdir {workdir}: needs a training run's config.json and split.json ({e})") from None
    ds, _ = loop.load_data(cfg)
    index = {n: i for i, n in enumerate(ds.names)}
    missing = [n for part in split_names.values() for n in part if n not in index]
    if missing:
        raise DataError(f"{len(missing)} songs of split.json are not in the data (first: {missing[0]})")
    split = {k: np.array([index[n] for n in split_names.get(k, [])], np.int64) for k in ("train", "valid", "test")}
    if cfg.test_data:  # trained on --data, tested on every song of --test-data (as the network was)
        ds, split["test"] = _with_songs_of(ds, loop.load_test_data(cfg, ds.class_names))
    songs = np.concatenate(list(split.values()))
    feats = song_features(cfg, ds, songs)
    log(f"features: {', '.join(f'{k} {len(v)} songs' for k, v in split.items() if len(v))}, {len(feats.win)} "
        f"windows ({time.time() - t0:.1f} s)")
    out = {"workdir": workdir, "data": cfg.data, "split": cfg.split, "test_data": cfg.test_data or cfg.data,
           **evaluate(ds, split, feats)}
    out["seconds"] = time.time() - t0
    files.write_json(os.path.join(workdir, "baseline_mfcc_svm.json"), out)
    return out


def _with_songs_of(ds: data_lib.Dataset, other: data_lib.Dataset) -> tuple[data_lib.Dataset, np.ndarray]:
    """ds's songs, then `other`'s (labelled in ds's genres) in one Dataset -> (it, the indices of other's songs)."""
    both = data_lib.Dataset(
        audio=np.concatenate([np.asarray(ds.audio), np.asarray(other.audio)]),
        lengths=np.concatenate([ds.lengths, other.lengths]), labels=np.concatenate([ds.labels, other.labels]),
        names=ds.names + tuple(f"test:{n}" for n in other.names), class_names=ds.class_names,
        sample_rate=ds.sample_rate, offsets=np.concatenate([ds.offsets, other.offsets + len(ds.audio)]))
    return both, len(ds) + np.arange(len(other), dtype=np.int64)


def segment_split_demo(folder: str, *, train_share: float = 0.7) -> dict:
    """The protocol a segment split implies, on a folder of genre sub-folders: each song's windows are
    split by time (the first `train_share` of them train, the rest test), so every test window has
    training windows from the same recording. -> {"window_accuracy", "song_accuracy", "n_songs", ...}."""
    from crnn_jax.data import loaders

    cfg = Config(data=folder)  # the default front end and 3 s windows
    ds = loaders.load_dataset(cfg)
    songs = np.arange(len(ds))
    feats = song_features(cfg, ds, songs)
    win, w_song = feats.win, feats.w_song
    # eval_windows groups windows by song in order: position of each window within its song, in [0, 1)
    pos = np.concatenate([np.arange(n) / n for n in np.bincount(w_song, minlength=len(ds))])
    train, test = pos < train_share, pos >= train_share
    clf = fit(win[train], ds.labels[w_song[train]], 10.0)
    s_pred = song_predictions(clf, win[test], w_song[test], songs)
    return {"folder": folder, "n_songs": len(ds), "n_classes": len(ds.class_names),
            "train_windows": int(train.sum()), "test_windows": int(test.sum()),
            "window_accuracy": float((clf.predict(win[test]) == ds.labels[w_song[test]]).mean()),
            "song_accuracy": float((s_pred == ds.labels).mean())}
