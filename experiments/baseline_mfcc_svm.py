"""The classic genre baseline, MFCC statistics + an RBF SVM, on exactly the songs and split of a training run.

    python experiments/baseline_mfcc_svm.py --workdir RUN
    python experiments/baseline_mfcc_svm.py --segment-split-demo /path/to/genres   # what a segment split measures

Reads RUN/config.json (data, sample rate, mel settings, crop) and RUN/split.json (train/valid/test song
names, written by crnn_jax.train), loads the same audio (crnn_jax.train.load_data), and measures
song-level test accuracy, written to RUN/baseline_mfcc_svm.json and printed beside the CRNN's
RUN/results.json test_accuracy. Nothing else in RUN is touched.

Features (20 MFCCs and deltas of every evaluation window, mean and std: 80 numbers), the two classifiers
(StandardScaler + RBF SVC on windows, "test_accuracy", and on whole-song statistics, "test_accuracy_songs")
and the choice of C by validation songs are in crnn_jax/kfold/baseline.py, which crnn_jax.cv runs on every fold
of a k-fold evaluation.
Measured here (experiments/README.md has the commands): on the built-in synthetic set (experiments/synth_compare.py
runs, seeds 0-2, 40 test songs each) 0.842 +- 0.038 (windows) and 0.775 +- 0.075 (songs); with
--segment-split-demo on the ten real sample clips (one per genre) 0.90, which measures recognising a recording,
not a genre. On 70 real GTZAN clips (crnn_jax.cv, 5 folds by song, seeds 0 and 1; not artist-filtered):
with 46 training songs and C by validation, 0.750 ± 0.133 (windows) and 0.564 ± 0.120 (songs); with all 56
training songs and C = 10 (experiments/gtzan70.py now), 0.750 ± 0.086 (windows) and 0.679 ± 0.093 (songs),
mean ± std over folds; on the full GTZAN: not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

try:
    import crnn_jax  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crnn_jax.kfold import baseline  # noqa: E402
from crnn_jax.config import ConfigError  # noqa: E402
from crnn_jax.data.dataset import DataError  # noqa: E402

# The reusable core (features, classifiers, scoring) lives in crnn_jax/kfold/baseline.py; crnn_jax.cv uses it too.
run, segment_split_demo, song_features = baseline.run, baseline.segment_split_demo, baseline.song_features


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
