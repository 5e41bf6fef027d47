"""experiments/new_artist_summary.py: a new-artist row from stored results (mean +- std, pooled recall, the
runs as one ensemble of their mean song log-probabilities)."""

import importlib.util
import json
import os

import numpy as np

from conftest import ROOT


def _script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "experiments", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(path, log_probs, songs, classes):
    log_probs = np.log(np.asarray(log_probs, float))
    labels = np.array([classes.index(s.split("/")[0]) for s in songs])
    os.makedirs(path)
    with open(os.path.join(path, "results.json"), "w") as f:
        json.dump({"class_names": classes, "test_songs": songs,
                   "test": {"accuracy": float(np.mean(log_probs.argmax(1) == labels)), "loss": 1.0,
                            "song_log_probs": log_probs.tolist()}}, f)


def test_new_artist_summary_pools_recall_and_ensembles_by_mean_log_probability(tmp_path, capsys):
    classes, songs = ["a", "b", "c"], ["a/1.wav", "b/2.wav", "c/3.wav"]
    # Each run is right on two songs. Song 2 (b): run 1 says a 0.90, run 2 b 0.50: the mean probability picks a
    # (0.46 against 0.295), the mean log-probability b (0.018 < 0.045 as geometric means): the ensemble is right.
    _run(str(tmp_path / "r1"), [[0.8, 0.1, 0.1], [0.9, 0.09, 0.01], [0.1, 0.1, 0.8]], songs, classes)
    _run(str(tmp_path / "r2"), [[0.7, 0.2, 0.1], [0.02, 0.50, 0.48], [0.1, 0.6, 0.3]], songs, classes)
    assert _script("new_artist_summary").main([str(tmp_path / "r1"), str(tmp_path / "r2")]) == 0
    out = capsys.readouterr().out
    assert "0.667 +- 0.000 (0.667, 0.667)" in out
    assert "per-genre recall, pooled: a 1.00, b 0.50, c 0.50" in out
    assert "the 2 runs as one ensemble: 1.000" in out
