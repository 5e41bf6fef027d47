"""The classic genre baseline, MFCC statistics + an RBF SVM, on exactly the songs and split of a training run.

    python experiments/baseline_mfcc_svm.py --workdir RUN
    python experiments/baseline_mfcc_svm.py --segment-split-demo /path/to/genres   # what a segment split measures

Reads RUN/config.json (data, sample rate, mel settings, crop) and RUN/split.json (train/valid/test song
names, written by crnn_jax.train), loads the same audio (crnn_jax.train.load_data), and measures
song-level test accuracy, written to RUN/baseline_mfcc_svm.json and printed beside the CRNN's
RUN/results.json test_accuracy. Nothing else in RUN is touched.

Features (no learning): every evaluation window of a song (the run's crop and eval hop, as the CRNN is
evaluated) -> log-mel in dB from crnn_jax.mel with the run's front-end settings -> 20 MFCCs = DCT-II
(scipy.fft.dct, norm="ortho") of the dB mel bands (librosa.feature.mfcc's DCT, on our HTK bands) -> deltas
(np.gradient over frames) -> mean and std over the window's frames: 80 numbers per window.
Two classifiers, both StandardScaler + SVC(kernel="rbf", gamma="scale"):
  windows: trained on training windows; a song's prediction is the argmax of the mean one-vs-rest decision
           value over its windows (the analogue of the CRNN's mean log-probability). -> "test_accuracy"
  songs:   one vector per song, mean and std over all its frames (Tzanetakis & Cook style). -> "test_accuracy_songs"
C is picked from (1, 10, 100) by validation song accuracy when the split has validation songs, else 10.
Measured here (experiments/README.md has the commands): on the built-in synthetic set (experiments/synth_compare.py
runs, seeds 0-2, 40 test songs each) 0.842 +- 0.038 (windows) and 0.775 +- 0.075 (songs); with
--segment-split-demo on the ten real sample clips (one per genre) 0.90, which measures recognising a recording,
not a genre. On GTZAN: not measured (the data set is not on this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

try:
    import crnn_jax  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import scipy.fft  # noqa: E402

from crnn_jax import data as data_lib  # noqa: E402
from crnn_jax import mel as mel_lib  # noqa: E402
from crnn_jax import model as model_lib  # noqa: E402
from crnn_jax import report  # noqa: E402
from crnn_jax import train as train_lib  # noqa: E402
from crnn_jax.config import Config, ConfigError  # noqa: E402
from crnn_jax.data import DataError  # noqa: E402

N_MFCC = 20
C_GRID = (1.0, 10.0, 100.0)
BATCH = 64  # windows per log-mel call (one compiled shape)


def mfcc_frames(logmel: np.ndarray) -> np.ndarray:
    """dB log-mel [..., frames, n_mels] -> MFCCs and their deltas [..., frames, 2 * N_MFCC]."""
    c = scipy.fft.dct(logmel, type=2, norm="ortho", axis=-1)[..., :N_MFCC]  # [..., frames, N_MFCC]
    return np.concatenate([c, np.gradient(c, axis=-2)], axis=-1)


def song_features(cfg: Config, ds: data_lib.Dataset, songs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (window features [W, 80], window song ids [W], song features [S, 80]) for the given songs."""
    crop = cfg.crop_samples
    w_song, w_off = data_lib.eval_windows(ds.lengths, songs, crop=crop, hop=cfg.eval_hop_samples)
    logmel = jax.jit(lambda x: mel_lib.log_mel_spectrogram(x, model_lib.mel_config_of(cfg)))
    frames = []  # per window: [frames, 40]
    for i in range(0, len(w_song), BATCH):
        s, o = w_song[i:i + BATCH], w_off[i:i + BATCH]
        n = len(s)
        s, o = np.concatenate([s, np.repeat(s[-1:], BATCH - n)]), np.concatenate([o, np.repeat(o[-1:], BATCH - n)])
        x = ds.crops(s, o, crop).astype(np.float32) / data_lib.INT16_SCALE  # [BATCH, crop]
        frames.append(mfcc_frames(np.asarray(logmel(x), np.float64))[:n])  # [n, frames, 40]
    f = np.concatenate(frames)  # [W, frames, 40]
    win = np.concatenate([f.mean(1), f.std(1)], axis=1)  # [W, 80]
    per_song = [f[w_song == s].reshape(-1, f.shape[-1]) for s in songs]  # each [frames of the song, 40]
    song = np.stack([np.concatenate([g.mean(0), g.std(0)]) for g in per_song])  # [S, 80]
    return win, w_song, song


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


def run(workdir: str, *, log=print) -> dict:
    """Fit and evaluate both baselines on RUN's split; writes RUN/baseline_mfcc_svm.json; returns its dict."""
    t0 = time.time()
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            cfg = Config.from_dict(json.load(f))
        with open(os.path.join(workdir, "split.json")) as f:
            split_names = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"--workdir {workdir}: needs a training run's config.json and split.json ({e})") from None
    ds, _ = train_lib.load_data(cfg)
    index = {n: i for i, n in enumerate(ds.names)}
    missing = [n for part in split_names.values() for n in part if n not in index]
    if missing:
        raise DataError(f"{len(missing)} songs of split.json are not in the data (first: {missing[0]})")
    split = {k: np.array([index[n] for n in split_names.get(k, [])], np.int64) for k in ("train", "valid", "test")}
    feats = {k: song_features(cfg, ds, v) for k, v in split.items() if len(v)}
    y = {k: ds.labels[v] for k, v in split.items()}
    log(f"features: {', '.join(f'{k} {len(v)} songs / {len(feats[k][0])} windows' for k, v in split.items() if len(v))}"
        f" ({time.time() - t0:.1f} s)")

    def accuracy(kind: str, c: float, part: str) -> tuple[float, np.ndarray]:
        win, w_song, song = feats["train"]
        if kind == "windows":
            clf = fit(win, ds.labels[w_song], c)
            pred = song_predictions(clf, feats[part][0], feats[part][1], split[part])
        else:
            pred = fit(song, y["train"], c).predict(feats[part][2])
        return float((pred == y[part]).mean()), pred

    out = {"workdir": workdir, "data": cfg.data, "split": cfg.split, "n_train": len(split["train"]),
           "n_valid": len(split["valid"]), "n_test": len(split["test"]), "class_names": list(ds.class_names)}
    for kind in ("windows", "songs"):
        c = max(C_GRID, key=lambda c: accuracy(kind, c, "valid")[0]) if len(split["valid"]) else 10.0
        acc, pred = accuracy(kind, c, "test")
        key = "test_accuracy" if kind == "windows" else "test_accuracy_songs"
        out.update({key: acc, f"C_{kind}": c, f"confusion_{kind}":
                    report.confusion(y["test"], pred, len(ds.class_names)).tolist()})
    out["seconds"] = time.time() - t0
    with open(os.path.join(workdir, "baseline_mfcc_svm.json"), "w") as f:
        json.dump(out, f, indent=1)
    return out


def segment_split_demo(folder: str, *, train_share: float = 0.7) -> dict:
    """The protocol a segment split implies, on a folder of genre sub-folders: each song's windows are
    split by time (the first `train_share` of them train, the rest test), so every test window has
    training windows from the same recording. -> {"window_accuracy", "song_accuracy", "n_songs", ...}."""
    from crnn_jax import loaders

    cfg = Config(data=folder)  # the default front end and 3 s windows
    ds = loaders.load_folder(folder, sample_rate=cfg.sample_rate, cache=cfg.cache_dir)
    songs = np.arange(len(ds))
    win, w_song, _ = song_features(cfg, ds, songs)
    # eval_windows groups windows by song in order: position of each window within its song, in [0, 1)
    pos = np.concatenate([np.arange(n) / n for n in np.bincount(w_song, minlength=len(ds))])
    train, test = pos < train_share, pos >= train_share
    clf = fit(win[train], ds.labels[w_song[train]], 10.0)
    s_pred = song_predictions(clf, win[test], w_song[test], songs)
    return {"folder": folder, "n_songs": len(ds), "n_classes": len(ds.class_names),
            "train_windows": int(train.sum()), "test_windows": int(test.sum()),
            "window_accuracy": float((clf.predict(win[test]) == ds.labels[w_song[test]]).mean()),
            "song_accuracy": float((s_pred == ds.labels).mean())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--workdir", help="a finished (or started) crnn_jax.train workdir")
    g.add_argument("--segment-split-demo", metavar="FOLDER",
                   help="instead: MFCC+SVM on a split of every song's windows by time (what a segment split measures)")
    args = p.parse_args(argv)
    try:
        if args.segment_split_demo:
            d = segment_split_demo(args.segment_split_demo)
            print(f"segment split of {d['n_songs']} songs, {d['n_classes']} genres ({d['train_windows']} train / "
                  f"{d['test_windows']} test windows, the test windows are the last 30% of every song): "
                  f"window accuracy {d['window_accuracy']:.4f}, song accuracy {d['song_accuracy']:.4f}")
            return 0
        out = run(args.workdir)
    except (ConfigError, DataError) as e:
        print(f"baseline_mfcc_svm: error: {e}", file=sys.stderr)
        return 2
    crnn = None
    try:
        with open(os.path.join(args.workdir, "results.json")) as f:
            crnn = json.load(f).get("test_accuracy")
    except (OSError, json.JSONDecodeError):
        pass
    n = out["n_test"]
    for label, key, c in (("windows (mean decision)", "test_accuracy", "C_windows"),
                          ("song statistics        ", "test_accuracy_songs", "C_songs")):
        print(f"MFCC+SVM, {label} test accuracy {out[key]:.4f} by song (n={n}, C={out[c]:g})")
    print(f"CRNN/CNN (results.json)          test accuracy "
          + (f"{crnn:.4f} by song" if crnn is not None else "n/a (training has not finished)"))
    print(f"written {os.path.join(args.workdir, 'baseline_mfcc_svm.json')} ({out['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
