"""experiments/new_artist_summary.py: a new-artist row from stored results (mean +- std, pooled recall, the
runs as one ensemble of their mean song log-probabilities); experiments/tta_lowpass.py: its plain view is the
run's own test pass."""

import importlib.util
import json
import os

import numpy as np

from crnn_jax.training import report

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
    # A run that has not finished: one line naming it, not a traceback.
    assert _script("new_artist_summary").main([str(tmp_path / "r1"), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'missing'}: no readable results.json" in err[0]


def test_tta_lowpass_plain_view_is_the_runs_test_pass_and_a_nyquist_cutoff_changes_nothing(smoke_record):
    workdir, trained = smoke_record.workdir, smoke_record.results
    with open(os.path.join(workdir, "config.json")) as f:
        nyquist = json.load(f)["sample_rate"] / 2
    logp, w_song, songs, labels, names, head = _script("tta_lowpass").window_log_probs(workdir, None, (nyquist, 1000.0))
    assert logp.shape == (3, trained["test"]["n_windows"], len(names)) and len(w_song) == logp.shape[1]
    ev = report.evaluate_scores(logp[0], w_song, songs, labels, names, head)
    np.testing.assert_allclose(ev["song_log_probs"], trained["test"]["song_log_probs"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logp[1], logp[0], atol=1e-4)  # the low-pass at the Nyquist frequency: a no-op
    assert np.abs(logp[2] - logp[0]).max() > 1e-2  # 1 kHz: another input
