"""The k-fold driver end to end on generated audio (3 genres x 5 songs of 3 s, the smoke-size CRNN):
every fold from one call, the summary and plots, skip and resume on a second call, the baseline on the
same songs, an ensemble of two networks a fold (one k-fold run, trained once, serves both); validation
songs never from the test fold; the MFCC+SVM baseline against librosa's MFCCs; spreads; bad flags in one
line."""

import json
import os
import shutil
import statistics

import numpy as np
import pytest
import soundfile as sf

from conftest import SMOKE
from crnn_jax import cmdline
from crnn_jax import config as config_lib
from crnn_jax import cv
from crnn_jax.data import dataset as data_lib
from crnn_jax.data import splits
from crnn_jax.kfold import baseline
from crnn_jax.kfold import driver
from crnn_jax.errors import DataError
from crnn_jax.kfold import summary as cv_summary
from crnn_jax.training import loop
from crnn_jax.training import workdir as workdir_lib

GENRES, SONGS, K = 3, 5, 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """GENRES genre folders of SONGS generated 3 s songs each (three classes of the synthetic music)."""
    ds = data_lib.synthetic(clips_per_class=SONGS, seconds=3.0, sample_rate=22050, seed=0)
    root = tmp_path_factory.mktemp("genres")
    for i in range(len(ds)):
        c = int(ds.labels[i])
        if c < GENRES:
            g = root / ds.class_names[c]
            g.mkdir(exist_ok=True)
            x = ds.song(i)
            sf.write(str(g / f"{ds.class_names[c]}.{i:05d}.wav"), x, 22050, subtype="PCM_16")
    return str(root)


def load(*path):
    with open(os.path.join(*path)) as f:
        return json.load(f)


def read(path):
    with open(path) as f:
        return f.read()


def cv_args(folder, out, *extra):
    return ["--config", SMOKE, "--data", folder, "--folds", str(K), "--seeds", "0", "--out", out,
            "--set", "eval_hop_seconds=1.0",
            "--max-steps", "4", "--eval-every", "2", *extra]


def test_kfold_takes_validation_songs_from_the_training_part():
    labels = np.repeat(np.arange(10), 7)  # the shape of gtzan-70: 7 songs per genre
    for seed in (0, 1):
        folds = [splits.kfold_split(labels, 5, fold=f, valid_fraction=0.1, seed=seed) for f in range(5)]
        tests = [set(p["test"].tolist()) for p in folds]
        assert sorted(s for t in tests for s in t) == list(range(70))  # every song tested exactly once
        for f, p in enumerate(folds):
            valid, train = set(p["valid"].tolist()), set(p["train"].tolist())
            assert valid and not valid & tests[f] and not train & tests[f] and not valid & train
            assert valid | train | tests[f] == set(range(70))
            assert np.bincount(labels[p["valid"]], minlength=10).tolist() == [1] * 10  # round(0.1 * 7) per genre
    # another seed is another partition (repeated k-fold), the same seed the same one
    assert splits.kfold_split(labels, 5, fold=0, valid_fraction=0.1, seed=0)["test"].tolist() != \
        splits.kfold_split(labels, 5, fold=0, valid_fraction=0.1, seed=1)["test"].tolist()


def test_the_baseline_scores_mfcc_statistics_by_song(folder):
    """kfold/baseline.py on the folder's songs: the MFCCs are librosa's (DCT-II, orthonormal, of the dB mel
    bands), a window's features their mean and std over its frames, and a song's prediction the argmax of its
    windows' mean SVM decision value."""
    import librosa
    from crnn_jax.data import loaders

    cfg = config_lib.load_preset(SMOKE).replace(data=folder, split=f"kfold:{K}", eval_hop_seconds=1.0)
    ds = loaders.load_dataset(cfg)
    logmel = np.random.default_rng(0).normal(-40.0, 15.0, (3, 44, 96))  # [windows, frames, mels] in dB
    got = baseline.mfcc_frames(logmel)
    assert got.shape == (3, 44, 2 * baseline.N_MFCC)
    for w in range(3):
        ref = librosa.feature.mfcc(S=logmel[w].T, n_mfcc=baseline.N_MFCC, dct_type=2, norm="ortho").T
        np.testing.assert_allclose(got[w, :, :baseline.N_MFCC], ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got[w, :, baseline.N_MFCC:], np.gradient(ref, axis=0), rtol=1e-10, atol=1e-10)
    songs = np.arange(len(ds))
    feats = baseline.song_features(cfg, ds, songs)
    w_song, _ = data_lib.eval_windows(ds.lengths, songs, crop=cfg.crop_samples, hop=cfg.eval_hop_samples)
    assert feats.win.shape == (len(w_song), 4 * baseline.N_MFCC) and feats.song.shape == (len(ds), 4 * baseline.N_MFCC)
    np.testing.assert_array_equal(feats.w_song, w_song)
    assert np.bincount(w_song).tolist() == [3] * len(ds)  # 3 s songs, 1 s windows, 1 s hop
    split = splits.kfold_split(ds.labels, K, fold=0, valid_fraction=0.2, seed=0)
    res = baseline.evaluate(ds, split, feats)
    assert (res["n_train"], res["n_valid"], res["n_test"]) == tuple(len(split[k]) for k in ("train", "valid", "test"))
    assert res["C_windows"] in baseline.C_GRID and res["C_songs"] in baseline.C_GRID
    clf = baseline.fit(feats.subset(split["train"]).win, ds.labels[feats.subset(split["train"]).w_song], res["C_windows"])
    test = feats.subset(split["test"])
    dec = clf.decision_function(test.win)  # [test windows, classes]
    want = [clf.classes_[dec[test.w_song == s].mean(0).argmax()] for s in split["test"]]
    assert res["test_predictions"] == [int(x) for x in want]
    assert res["test_accuracy"] == pytest.approx(np.mean(np.array(want) == ds.labels[split["test"]]))
    conf = np.array(res["confusion_windows"])
    assert conf.sum() == len(split["test"]) and np.trace(conf) == round(res["test_accuracy"] * len(split["test"]))


@pytest.fixture(scope="module")
def kfold(folder, tmp_path_factory):
    """One k-fold run (K folds, seed 0, every fold trained and its baseline fitted) from one call: the OUT
    folder. Tests read it, or copy it and call the driver again on the copy (skip, resume, an ensemble)."""
    out = str(tmp_path_factory.mktemp("kfold") / "cv")
    assert cv.main(cv_args(folder, out)) == 0
    return out


def copy_of(out, dest):
    """OUT copied (file times kept) to dest: its runs are finished runs of the same configs there."""
    shutil.copytree(out, dest)
    return str(dest)


@pytest.mark.slow
def test_all_folds_from_one_call_then_skip_and_resume(kfold, folder, tmp_path, capsys):
    out = kfold
    s = load(out, "summary.json")
    n = GENRES * SONGS
    assert s["n_runs"] == K and s["n_test_songs"] == n and s["complete"]
    conf = np.array(s["network"]["confusion"])
    assert conf.shape == (GENRES, GENRES) and conf.sum() == n and conf.sum(1).tolist() == [SONGS] * GENRES
    assert np.array(s["baseline"]["confusion"]).sum() == n
    assert set(s["network"]["recall"]) == set(s["class_names"]) and len(s["class_names"]) == GENRES
    accs = [r["accuracy"] for r in s["runs"]]
    assert s["network"]["mean"] == pytest.approx(statistics.mean(accs))
    assert s["network"]["std_folds"] == pytest.approx(statistics.stdev(accs))  # one seed: the plain fold std
    for f in ("summary.md", "summary-confusion.png", "summary-confusion-baseline.png"):
        assert os.path.getsize(os.path.join(out, f)) > 0
    assert "not by artist" in read(os.path.join(out, "summary.md"))
    m = s["mcnemar"]["0"]  # the per-song pairing agrees with the two accuracies
    assert m["n_songs"] == n and m["n_net_only"] - m["n_base_only"] == round(
        n * (s["network"]["accuracy"] - s["baseline"]["accuracy"])) and 0 < m["p"] <= 1
    assert "exact McNemar" in read(os.path.join(out, "summary.md"))
    tested = []
    for r in s["runs"]:
        wd = r["workdir"]
        res, split, b = load(wd, "results.json"), load(wd, "split.json"), load(wd, "baseline_mfcc_svm.json")
        assert load(wd, "config.json")["split"] == f"kfold:{K}" and load(wd, "config.json")["fold"] == r["fold"]
        assert b["test_songs"] == res["test_songs"] == split["test"]  # the baseline scores the same songs
        assert not set(split["valid"]) & set(split["test"]) and not set(split["train"]) & set(split["test"])
        assert b["n_train"] == len(split["train"]) and b["n_valid"] == len(split["valid"])
        assert r["baseline"]["accuracy"] == b["test_accuracy"]
        assert statistics.mean(r["correct"]) == pytest.approx(r["accuracy"])  # per song, as accuracy counts
        assert statistics.mean(r["baseline"]["correct"]) == pytest.approx(b["test_accuracy"])
        assert r["timing"]["wall_seconds"] > 0 and len(r["timing"]["loadavg_1_5_15"]) == 3
        tested += split["test"]
    assert len(tested) == len(set(tested)) == n  # the folds partition the songs

    # Second call (on a copy, which the fixture's run is to the driver): nothing is retrained.
    out = copy_of(kfold, tmp_path / "cv")
    s = {**s, "runs": [{**r, "workdir": os.path.join(out, os.path.basename(r["workdir"]))} for r in s["runs"]]}
    wd1 = s["runs"][1]["workdir"]
    stamps = {r["workdir"]: os.path.getmtime(os.path.join(r["workdir"], "metrics.jsonl")) for r in s["runs"]}
    capsys.readouterr()
    assert cv.main(cv_args(folder, out)) == 0
    log = capsys.readouterr().out
    assert log.count("done before") == K and "resumed" not in log
    assert log.strip().splitlines()[-1] == f"note: {cv_summary.NOTE}" and log.count("note:") == 1  # said once, last
    assert {w: os.path.getmtime(os.path.join(w, "metrics.jsonl")) for w in stamps} == stamps
    again = load(out, "summary.json")
    assert again["network"] == s["network"] and [r["workdir"] for r in again["runs"]] == list(stamps)

    # A fold interrupted after its step-2 checkpoint resumes from it and ends exactly as before.
    metrics_before = read(os.path.join(wd1, "metrics.jsonl"))
    os.remove(os.path.join(wd1, "results.json"))
    shutil.rmtree(os.path.join(wd1, "checkpoints", "4"))
    assert cv.main(cv_args(folder, out)) == 0
    log = capsys.readouterr().out
    assert log.count("done before") == K - 1 and "resumed from checkpoint at step 2" in log
    assert read(os.path.join(wd1, "metrics.jsonl")) == metrics_before
    s2 = load(out, "summary.json")
    assert [r["accuracy"] for r in s2["runs"]] == accs and s2["baseline"] == s["baseline"]


def test_spreads_over_folds_and_seeds(tmp_path):
    rows = [{"seed": s, "fold": f, "accuracy": a, "n_test": 10, "confusion": [[1, 0], [0, 1]],
             "baseline": {"accuracy": a - 0.1, "accuracy_songs": a, "confusion": [[1, 0], [1, 0]], "C": 1.0}}
            for s, accs in ((0, (0.5, 0.7, 0.6)), (1, (0.8, 0.6, 0.7))) for f, a in enumerate(accs)]
    s = cv_summary.summarise(config_lib.Config(data="x"), 3, [0, 1], rows, ("a", "b"))
    net = s["network"]
    assert net["mean"] == pytest.approx(0.65)
    assert net["std_folds"] == pytest.approx(np.sqrt((0.01 + 0.01) / 2))
    assert net["std_seeds"] == pytest.approx(statistics.stdev([0.6, 0.7]))
    assert s["difference"]["mean"] == pytest.approx(0.1) and s["difference"]["std_folds"] == pytest.approx(0, abs=1e-12)
    assert net["confusion"] == [[6, 0], [0, 6]] and s["baseline"]["recall"] == {"a": 1.0, "b": 0.0}
    assert s["complete"]
    assert "mcnemar" not in s  # rows without per-song results: no song-level test
    # Paired by song: seed 0 has 6 songs only the network got right and 1 only the baseline did.
    for r in rows:
        r["correct"], r["baseline"]["correct"] = [True] * 10, [True] * 10
    rows[0]["correct"][:1] = [False]
    for r in rows[:3]:
        r["baseline"]["correct"][1:3] = [False, False]
    m = cv_summary.summarise(config_lib.Config(data="x"), 3, [0, 1], rows, ("a", "b"))["mcnemar"]
    assert m["0"] == {"n_songs": 30, "n_net_only": 6, "n_base_only": 1, "p": pytest.approx(0.125, abs=1e-9)}
    assert m["1"] == {"n_songs": 30, "n_net_only": 0, "n_base_only": 0, "p": 1.0}
    part = cv_summary.summarise(config_lib.Config(data="x"), 3, [0, 1], rows[:4], ("a", "b"))  # seed 1 has one fold so far
    assert not part["complete"] and part["network"]["std_folds"] == pytest.approx(0.1)  # seed 0's folds only
    assert part["network"]["per_seed"]["1"]["std"] is None
    one = cv_summary.summarise(config_lib.Config(data="x"), 3, [0], rows[:1], ("a", "b"))
    assert one["network"]["std_folds"] is None and one["network"]["std_all"] is None
    out = tmp_path / "partial"
    out.mkdir()
    cv_summary.write(one, str(out))
    assert "PARTIAL: 1 of 3 runs" in read(out / "summary.md")
    for i, r in enumerate(rows):  # fold times, one of them from a run stopped and resumed
        r["timing"] = {"wall_seconds": 100.0 + i, "train_seconds": 90.0, "resumed_from": None,
                       "loadavg_1_5_15": [2.0, 2.0, 2.0], **({"partial": True} if i == 2 else {})}
    timed = cv_summary.summarise(config_lib.Config(data="x"), 3, [0, 1], rows, ("a", "b"))
    assert timed["timing"]["timed_runs"] == 6 and timed["timing"]["partial_runs"] == 1
    cv_summary.write(timed, str(out))
    md = read(out / "summary.md")
    assert md.count("(partial)") == 1 and "max 105 s" in md and "; 1 partial (stopped and resumed" in md


@pytest.mark.parametrize("extra, message", [
    (["--folds", "1"], "--folds 1: K must be >= 2"),
    (["--folds", "9"], "K must be <= 5, the number of songs of the smallest genre"),
    (["--seeds", "a,b"], "--seeds 'a,b': give comma-separated integers"),
    (["--seed", "3"], "unrecognized arguments: --seed 3"),
    (["--set", "nosuch=1"], "Config has no field 'nosuch'"),
    (["--set", "batch_size=x"], "'x' is not a valid int for batch_size"),
    (["--set", "fold=1"], "the driver sets fold itself"),
    (["--model", "rnn"], "--model must be one of"),
])
def test_bad_flags_give_one_line(folder, tmp_path, capsys, extra, message):
    args = cv_args(folder, str(tmp_path / "cv"))
    args[args.index("--folds") + 1:args.index("--folds") + 2] = [extra[1]] if extra[0] == "--folds" else [str(K)]
    if extra[0] != "--folds":
        args += extra
    assert cv.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()  # progress lines of the data loader may come first
    assert err[-1].startswith("crnn_jax.cv: error:") and message in err[-1]
    assert sum("error" in l for l in err) == 1 and not any("Traceback" in l for l in err)
    assert not os.path.exists(tmp_path / "cv" / "summary.json")


def test_missing_data_folder_gives_one_line(tmp_path, capsys):
    assert cv.main(cv_args(str(tmp_path / "nowhere"), str(tmp_path / "cv"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("crnn_jax.cv: error:") and "nowhere" in err[0]


def test_a_rerun_adds_to_a_folds_time_and_never_replaces_it(tmp_path):
    """cv_timing.json: a fresh run records its wall time; a call that resumed a timed run (a longer schedule,
    or a finished one re-tested after a resumable config change) adds its seconds to the record, and one that
    trained no step keeps the earlier load average instead of the re-test's."""
    path = str(tmp_path / "cv_timing.json")
    driver.write_timing(path, 500.0, {"train_seconds": 480.0, "resumed_from": None, "steps": 1680})
    first = json.load(open(path))
    assert first["wall_seconds"] == 500.0 and len(first["loadavg_1_5_15"]) == 3
    first["loadavg_1_5_15"] = [9.0, 9.0, 9.0]  # mark it, to see whether a re-test keeps it
    json.dump(first, open(path, "w"))
    driver.write_timing(path, 4.0, {"train_seconds": 480.0, "resumed_from": 1680, "steps": 1680})  # re-test only
    again = json.load(open(path))
    assert again["wall_seconds"] == 504.0 and again["loadavg_1_5_15"] == [9.0, 9.0, 9.0]
    driver.write_timing(path, 300.0, {"train_seconds": 760.0, "resumed_from": 1680, "steps": 2520})  # longer schedule
    longer = json.load(open(path))
    assert longer["wall_seconds"] == 804.0 and longer["loadavg_1_5_15"] != [9.0, 9.0, 9.0]
    driver.write_timing(path, 7.0, {"train_seconds": 6.0, "resumed_from": None, "steps": 20})  # a fresh run replaces
    assert json.load(open(path))["wall_seconds"] == 7.0


def test_a_fold_stopped_before_its_record_keeps_its_training_seconds_and_says_partial(tmp_path):
    """A fold killed mid-run has no cv_timing.json; the call that resumes it adds the stopped segment's
    training seconds up to the checkpoint it resumed from (train_time.jsonl) and marks the record partial,
    which a later re-test and an ensemble's fold record keep."""
    path = str(tmp_path / "cv_timing.json")
    with open(tmp_path / "train_time.jsonl", "w") as f:
        for step, sec in ((100, 40.0), (200, 75.0), (300, 110.0)):  # steps 300+ were lost with the kill
            f.write(json.dumps({"step": step, "train_seconds": sec}) + "\n")
    driver.write_timing(path, 250.0, {"train_seconds": 330.0, "resumed_from": 200, "steps": 1680})
    rec = json.load(open(path))
    assert rec["wall_seconds"] == 325.0 and rec["partial"] is True
    driver.write_timing(path, 4.0, {"train_seconds": 330.0, "resumed_from": 1680, "steps": 1680})  # re-test
    again = json.load(open(path))
    assert again["wall_seconds"] == 329.0 and again["partial"] is True
    assert again["loadavg_1_5_15"] == rec["loadavg_1_5_15"]
    full = {"wall_seconds": 500.0, "train_seconds": 480.0, "resumed_from": None, "loadavg_1_5_15": [1, 1, 1]}
    assert "partial" not in driver.fold_timing([full, full])
    assert driver.fold_timing([full, json.load(open(path))])["partial"] is True
    driver.write_timing(path, 7.0, {"train_seconds": 6.0, "resumed_from": None, "steps": 20})  # a fresh run
    assert "partial" not in json.load(open(path))


def test_member_changes_the_training_stream_not_the_split():
    base = config_lib.Config(data="x", split="kfold:5", seed=3)
    assert base.train_seed == 3  # member 0 is the run it always was
    seeds = {base.replace(member=m).train_seed for m in range(1, 6)} | {base.replace(member=1, seed=4).train_seed}
    assert len(seeds) == 6 and 3 not in seeds and all(0 <= s < 2 ** 31 for s in seeds)
    labels = np.repeat(np.arange(10), 7)
    parts = [splits.kfold_split(labels, 5, fold=1, valid_fraction=0.1, seed=c.seed)
             for c in (base, base.replace(member=2))]
    assert all(parts[0][k].tolist() == parts[1][k].tolist() for k in ("train", "valid", "test"))
    assert base.replace(data="synthetic").resolved_workdir() == os.path.join("runs", "crnn-synthetic-seed3")
    assert base.replace(data="synthetic", member=2).resolved_workdir() == os.path.join("runs", "crnn-synthetic-seed3-m2")
    with pytest.raises(cv.ConfigError, match="ensemble must be an integer >= 1"):
        base.replace(ensemble=0)


@pytest.mark.slow
def test_ensemble_averages_members_song_log_probabilities(kfold, folder, tmp_path, capsys):
    # Member 0 of every fold is the k-fold run's own network (the same config): the copy's are done before,
    # and only the second member of each fold trains.
    out = copy_of(kfold, tmp_path / "ens")
    args = cv_args(folder, out, "--set", "ensemble=2")
    assert cv.main(args) == 0
    assert capsys.readouterr().out.count("done before") == K
    s = load(out, "summary.json")
    assert s["ensemble"] == 2 and s["n_runs"] == K and s["complete"]
    for r in s["runs"]:
        m0, m1 = r["member_workdirs"]
        assert m0 == r["workdir"] and m1 == r["workdir"] + "-m1"
        c0, c1 = load(m0, "config.json"), load(m1, "config.json")
        assert (c0["member"], c1["member"], c0["ensemble"], c1["ensemble"]) == (0, 1, 1, 1)
        r0, r1 = load(m0, "results.json"), load(m1, "results.json")
        assert r0["test_songs"] == r1["test_songs"] == load(m1, "split.json")["test"]  # one split, two networks
        assert load(m0, "split.json") == load(m1, "split.json")
        # Other initialisation, crops and dropout: the first training loss already differs.
        first = [json.loads(read(os.path.join(w, "metrics.jsonl")).splitlines()[0])["train_loss"] for w in (m0, m1)]
        assert first[0] != first[1]
        # The oracle: argmax of the mean of the two members' stored song log-probabilities.
        slp = (np.array(r0["test"]["song_log_probs"]) + np.array(r1["test"]["song_log_probs"])) / 2
        classes = r0["class_names"]
        labels = [classes.index(os.path.basename(os.path.dirname(p))) for p in r0["test_songs"]]
        assert r["accuracy"] == pytest.approx(np.mean(slp.argmax(-1) == np.array(labels)))
        assert np.array(r["confusion"]).sum() == len(labels)
        assert r["member_accuracies"] == [r0["test_accuracy"], r1["test_accuracy"]]
        t = [load(w, "cv_timing.json")["wall_seconds"] for w in (m0, m1)]
        assert r["timing"]["wall_seconds"] == pytest.approx(sum(t), abs=0.11)
    assert s["members"]["mean"] == pytest.approx(statistics.mean(statistics.mean(r["member_accuracies"])
                                                                 for r in s["runs"]))
    assert "ensemble of 2" in read(os.path.join(out, "summary.md"))

    # A member written before results.json held song log-probabilities (an earlier version) is refused in one
    # line naming it, not scored from a guess.
    r = s["runs"][0]
    res = load(os.path.join(r["member_workdirs"][1], "results.json"))
    res["test"].pop("song_log_probs")
    rc = config_lib.Config.from_dict(load(r["member_workdirs"][1], "config.json"))
    ds, split = loop.load_data(rc)
    with pytest.raises(DataError, match="holds no song log-probabilities .*move that fold's workdir aside"):
        driver.member_song_log_probs(rc, res, ds, split["test"])
    # A run saved before `member` and `ensemble` existed (member 0 here, without them) counts as their
    # defaults, which are the old behaviour: recognised as finished, and it would resume.
    wd = s["runs"][0]["workdir"]
    old = load(wd, "config.json")
    del old["member"], old["ensemble"]
    with open(os.path.join(wd, "config.json"), "w") as f:
        json.dump(old, f)
    rc = driver.run_config(cmdline.config_of(cv.parse_args(args), lambda: "cpu", owned=cv.OWNED), out, K, 0, 0)
    assert driver.finished(rc) is not None
    workdir_lib.check(wd, rc)  # no "different config" refusal
    with pytest.raises(cv.ConfigError, match=r"different config \(member: 0 -> 1\)"):
        workdir_lib.check(wd, rc.replace(member=1))
    capsys.readouterr()
    assert cv.main(args) == 0  # nothing retrained; the re-scored members give the same ensemble
    assert capsys.readouterr().out.count("done before") == 2 * K
    assert [r["accuracy"] for r in load(out, "summary.json")["runs"]] == [r["accuracy"] for r in s["runs"]]

