"""`crnn-jax evaluate`: an existing model (conftest's smoke run, and its exported file) scored on its own data
reproduces its training run's test numbers exactly (workdir and model file alike) with the run's own
evaluation hop, scores a folder in the model's genre order, writes only into --out, and refuses the workdir."""

import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from crnn_jax import config as config_lib
from crnn_jax import evaluate as eval_lib
from crnn_jax.data import dataset as data_lib
from crnn_jax.data import synth
from crnn_jax.training import evaluator
from crnn_jax.training import loop
from crnn_jax.training import report

from conftest import edit_json, read_json, snapshot

GENRES = ("four_on_floor", "rising_arpeggio", "fm_bells")


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    """A folder of generated audio: 3 of the smoke model's genres x 6 songs, 1.5-2.6 s (1-3 windows of the
    smoke crop)."""
    root = tmp_path_factory.mktemp("music")
    for g in GENRES:
        label = synth.CLASS_NAMES.index(g)
        os.makedirs(root / g)
        for i in range(6):
            x = synth.generate_clip(label, seconds=1.5 + 0.22 * i, sample_rate=22050, seed=2, index=i)
            sf.write(str(root / g / f"{g}.{i:05d}.wav"), x, 22050, subtype="PCM_16")
    return str(root)


@pytest.fixture(scope="module")
def run(smoke_record, smoke_model):
    return smoke_record.workdir, smoke_record.results, smoke_model


def load(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def test_a_song_scores_the_mean_of_its_windows_log_probabilities():
    # Two songs: song 7 has two windows whose mean log-probability (a geometric mean) picks genre 1 while
    # the mean probability would pick genre 0; song 3 has one window. Window rows arrive interleaved.
    p7 = np.array([[0.80, 0.15, 0.05], [0.01, 0.30, 0.69]])  # song 7's windows
    p3 = np.array([[0.10, 0.20, 0.70]])  # song 3's window
    assert p7.mean(0).argmax() == 0 and np.log(p7).mean(0).argmax() == 1
    window_logp = np.log(np.stack([p7[0], p3[0], p7[1]])).astype(np.float32)
    window_song, songs = np.array([7, 3, 7]), np.array([3, 7])
    labels = np.zeros(8, np.int64)
    labels[7], labels[3] = 1, 2  # per dataset row
    slp = report.song_log_probs(window_logp, window_song, songs)
    np.testing.assert_allclose(slp, np.log(np.stack([p3[0], np.sqrt(p7[0] * p7[1])])), rtol=1e-6)
    ev = report.evaluate_scores(window_logp, window_song, songs, labels, ("a", "b", "c"))
    assert ev["song_predictions"] == [2, 1] and ev["accuracy"] == 1.0
    assert ev["confusion"] == [[0, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert ev["window_accuracy"] == pytest.approx(1 / 3) and ev["n_windows"] == 3 and ev["n_songs"] == 2  # 1 of 3
    np.testing.assert_allclose(ev["loss"], -np.mean(np.log([p7[0][1], p3[0][2], p7[1][1]])), rtol=1e-6)
    np.testing.assert_allclose(ev["song_log_probs"], slp)
    # A prediction reports the same song score: the renormalised geometric mean (softmax head).
    want = np.sqrt(p7[0] * p7[1]) / np.sqrt(p7[0] * p7[1]).sum()
    np.testing.assert_allclose(evaluator.song_probabilities(slp[1], "softmax"), want, rtol=1e-6)
    np.testing.assert_allclose(evaluator.song_probabilities(slp[1], "sigmoid"), np.sqrt(p7[0] * p7[1]), rtol=1e-6)


@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_the_evaluation_loss_is_the_heads_training_loss(head):
    # The validation loss (curves.png, the best checkpoint's tie-break) must be the quantity training
    # minimises: for the sigmoid head the mean over classes of ten binary cross-entropies, not -log p(true).
    import jax.numpy as jnp

    from crnn_jax import model as model_lib

    z = np.random.default_rng(0).normal(scale=8.0, size=(7, 10)).astype(np.float32)
    z[0, 3], z[1, 0] = 95.0, -95.0  # sure and right: log-sigmoid of the true class rounds to 0, of another to -95
    labels = np.array([3, 1, 4, 1, 5, 9, 2])
    window_logp = np.asarray(model_lib.log_probs(jnp.asarray(z), head))
    want = float(model_lib.loss_fn(jnp.asarray(z), jnp.asarray(labels), head).mean())
    got = report.window_loss(window_logp, labels, head)
    assert np.isfinite(got) and got == pytest.approx(want, rel=1e-5)
    if head == "sigmoid":  # the old quantity differs
        assert abs(-window_logp[np.arange(7), labels].mean() - want) > 0.1


@pytest.mark.parametrize("source", ["workdir", "model"])
def test_reproduces_the_runs_test_numbers(source, run, tmp_path):
    workdir, trained, model = run
    before = snapshot(workdir)
    out = str(tmp_path / "eval")
    args = ["--workdir", workdir] if source == "workdir" else ["--model", model]
    assert eval_lib.main([*args, "--out", out]) == 0  # the model's own data and split
    got = load(out)
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    assert got["test"] == saved["test"] == json.loads(json.dumps(trained["test"]))  # every number, exactly
    assert got["accuracy"] == saved["test_accuracy"] and got["window_accuracy"] == saved["test_window_accuracy"]
    assert got["songs"] == saved["test_songs"] and got["n_songs"] == len(saved["test_songs"]) >= 3
    assert set(got["test"]["per_class"]) == set(saved["class_names"])
    with open(os.path.join(out, "confusion.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(out)) == ["confusion.png", "results.json"]
    assert snapshot(workdir) == before  # the training workdir was only read


def test_the_runs_evaluation_hop_comes_along(run, tmp_path):
    # A copy of the run whose config says a 0.5 s hop (half the crop): every test song is cut into the
    # windows of that hop, more than the run's own test pass cut.
    workdir, trained, _ = run
    wd = str(tmp_path / "run")
    shutil.copytree(workdir, wd)
    edit_json(os.path.join(wd, "config.json"), eval_hop_seconds=0.5)
    assert eval_lib.main(["--workdir", wd, "--out", str(tmp_path / "eval")]) == 0
    got = load(str(tmp_path / "eval"))
    with open(os.path.join(wd, "config.json")) as f:
        half = config_lib.Config.from_dict(json.load(f))
    ds, split = loop.load_data(half)
    w_song, _ = data_lib.eval_windows(ds.lengths, split["test"], crop=half.crop_samples, hop=half.eval_hop_samples)
    assert got["test"]["n_windows"] == len(w_song) > trained["test"]["n_windows"]
    assert got["songs"] == trained["test_songs"]


def test_several_workdirs_are_one_ensemble_of_their_mean_log_probability(run, tmp_path, capsys):
    workdir, trained, _ = run
    other = str(tmp_path / "other")  # another model: the same run's newest checkpoint instead of its best
    shutil.copytree(workdir, other)
    shutil.rmtree(os.path.join(other, "best"))
    before = snapshot(workdir), snapshot(other)
    outs = {name: str(tmp_path / name) for name in ("a", "b", "ab")}
    assert eval_lib.main(["--workdir", workdir, "--out", outs["a"]]) == 0
    assert eval_lib.main(["--workdir", other, "--out", outs["b"]]) == 0
    assert eval_lib.main(["--workdir", workdir, "--workdir", other, "--out", outs["ab"]]) == 0
    a, b, ab = (load(outs[k]) for k in ("a", "b", "ab"))
    slp = {k: np.array(r["test"]["song_log_probs"]) for k, r in (("a", a), ("b", b), ("ab", ab))}
    assert not np.allclose(slp["a"], slp["b"])  # two different models
    np.testing.assert_allclose(slp["ab"], (slp["a"] + slp["b"]) / 2, rtol=1e-6, atol=1e-6)
    assert ab["test"]["song_predictions"] == slp["ab"].argmax(-1).tolist()  # the argmax of the mean
    conf, conf_a = np.array(ab["test"]["confusion"]), np.array(a["test"]["confusion"])
    assert (conf.sum(1) == conf_a.sum(1)).all() and ab["accuracy"] == np.trace(conf) / conf.sum()  # same songs
    assert ab["members"] == [workdir, other] and ab["songs"] == a["songs"] == trained["test_songs"]
    assert (snapshot(workdir), snapshot(other)) == before
    # Members whose windows do not align: one line, nothing written. --out inside any member: refused.
    trained_hop = read_json(os.path.join(other, "config.json"))["eval_hop_seconds"]
    edit_json(os.path.join(other, "config.json"), eval_hop_seconds=0.25)
    assert eval_lib.main(["--workdir", workdir, "--workdir", other, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must agree in their evaluation hop" in err[0] and not os.path.exists(tmp_path / "x")
    assert eval_lib.main(["--workdir", workdir, "--workdir", other, "--out", os.path.join(other, "e")]) == 2
    assert f"is inside the training workdir {other}" in capsys.readouterr().err
    # A member trained on songs of the split scored (another seed: another split) would inflate it: refused.
    edit_json(os.path.join(other, "config.json"), eval_hop_seconds=trained_hop)
    split = read_json(os.path.join(other, "split.json"))
    edit_json(os.path.join(other, "split.json"), train=split["train"] + split["test"][:2], test=split["test"][2:])
    assert eval_lib.main(["--workdir", workdir, "--workdir", other, "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--workdir {other} trained on 2 of the {len(ab['songs'])} songs" in err[0]
    assert not os.path.exists(tmp_path / "y")


def test_other_parts_and_a_folder_in_another_genre_order(run, music, tmp_path):
    workdir, trained, model = run
    out = str(tmp_path / "all")
    assert eval_lib.main(["--model", model, "--data", music, "--part", "all", "--out", out]) == 0
    everything = load(out)
    assert everything["n_songs"] == 18 and everything["all"]["n_windows"] >= 18
    assert everything["class_names"] == trained["class_names"]  # the model's genres, in its order
    # valid part = the run's validation pass at the step the model comes from (the tested checkpoint)
    assert eval_lib.main(["--model", model, "--part", "valid", "--out", str(tmp_path / "v")]) == 0
    tested = load(workdir)["tested_step"]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        [that_eval] = [r for r in map(json.loads, f) if "eval_loss" in r and r["step"] == tested]
    assert load(str(tmp_path / "v"))["valid"]["loss"] == that_eval["eval_loss"]

    # Two of the genres only, one folder: labels follow the model's genre order, not the folder's.
    sub = tmp_path / "two"
    for g in GENRES[1:]:
        os.makedirs(sub / g)
        for fn in sorted(os.listdir(os.path.join(music, g)))[:3]:
            os.link(os.path.join(music, g, fn), sub / g / fn)
    assert eval_lib.main(["--model", model, "--data", str(sub), "--part", "all", "--out", str(tmp_path / "o2")]) == 0
    two = load(str(tmp_path / "o2"))
    assert two["class_names"] == everything["class_names"] and two["n_songs"] == 6
    conf = np.array(two["all"]["confusion"])
    idx = [everything["class_names"].index(g) for g in GENRES[1:]]
    assert conf.sum() == 6 and conf[idx].sum() == 6  # every true label is one of the two genres


@pytest.mark.parametrize("case,message", [
    ("out_is_workdir", "is inside the training workdir"), ("out_inside_workdir", "is inside the training workdir"),
    ("out_foreign", "already holds other files"), ("unknown_genre", "that the model does not know"),
    ("no_data", "no such folder"), ("bad_part", "invalid choice"), ("both", "not allowed with"),
])
def test_refusals_are_one_line_and_write_nothing(case, message, run, music, tmp_path, capsys):
    workdir, _, model = run
    before = snapshot(workdir)
    out = str(tmp_path / "out")
    args = ["--workdir", workdir, "--data", music, "--out", out]
    if case == "out_is_workdir":
        args[-1] = workdir
    if case == "out_inside_workdir":
        args[-1] = os.path.join(workdir, "eval")
    if case == "out_foreign":
        os.makedirs(out)
        with open(os.path.join(out, "thesis.tex"), "w") as f:
            f.write("mine")
    if case == "unknown_genre":
        os.makedirs(tmp_path / "d" / "polka")
        sf.write(str(tmp_path / "d" / "polka" / "p.wav"), synth.generate_clip(0, seconds=1.5, sample_rate=22050,
                                                                             seed=1, index=0), 22050)
        os.makedirs(tmp_path / "d" / GENRES[0])
        fn = sorted(os.listdir(os.path.join(music, GENRES[0])))[0]
        os.link(os.path.join(music, GENRES[0], fn), tmp_path / "d" / GENRES[0] / fn)
        args[args.index("--data") + 1] = str(tmp_path / "d")
        args += ["--part", "all"]
    if case == "no_data":
        args[args.index("--data") + 1] = str(tmp_path / "nowhere")
    if case == "bad_part":
        args += ["--part", "everything"]
    if case == "both":
        args += ["--model", model]
    assert eval_lib.main(args) == 2
    cap = capsys.readouterr()
    lines = [line for line in cap.err.strip().splitlines() if not line.startswith("data: ")]  # the loader's progress
    assert len(lines) == 1 and lines[0].startswith("crnn_jax.evaluate: error: ") and message in lines[0], cap.err
    assert "Traceback" not in cap.err and cap.err.strip().splitlines()[-1] == lines[0]
    assert snapshot(workdir) == before
    if case != "out_foreign":
        assert not os.path.exists(out)
    else:
        assert os.listdir(out) == ["thesis.tex"]


@pytest.mark.slow  # trains a model (~50 s): the full suite runs it
def test_a_model_trained_with_split_all_and_test_data(music, tmp_path, capsys):
    """`--split all --test-data X` (experiments/new_artists*.py): every song of --data trains, X is the test; by
    default evaluate scores X as the run did, another --data drops X for that data's split, --split all is
    refused in one line."""
    other = tmp_path / "other"  # the 'new artists': two of the genres, songs not in `music`
    for g in GENRES[:2]:
        label = synth.CLASS_NAMES.index(g)
        os.makedirs(other / g)
        for i in range(3):
            x = synth.generate_clip(label, seconds=1.6, sample_rate=22050, seed=7, index=10 + i)
            sf.write(str(other / g / f"{g}.{i:05d}.wav"), x, 22050, subtype="PCM_16")
    cfg = config_lib.load_preset(os.path.join(os.path.dirname(__file__), "..", "experiments", "smoke.py")).replace(
        data=music, split="all", test_data=str(other), valid_fraction=0.0, max_steps=2,
        workdir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"))
    trained = loop.train(cfg, log=lambda *_: None)
    assert trained["n_test"] == 6 and sorted(trained["test_songs"]) == sorted(
        f"{g}/{g}.{i:05d}.wav" for g in GENRES[:2] for i in range(3))

    assert eval_lib.main(["--workdir", cfg.workdir, "--out", str(tmp_path / "e")]) == 0  # the run's own test
    got = load(str(tmp_path / "e"))
    assert got["data"] == str(other) and got["songs"] == trained["test_songs"]
    assert got["accuracy"] == trained["test"]["accuracy"] and got["test"]["loss"] == trained["test"]["loss"]

    assert eval_lib.main(["--workdir", cfg.workdir, "--data", music, "--out", str(tmp_path / "r")]) == 0
    mine = load(str(tmp_path / "r"))  # another folder: its own random split's test part, no trace of --test-data
    assert mine["data"] == music and mine["split"] == "random" and 0 < mine["n_songs"] < 18
    capsys.readouterr()
    assert eval_lib.main(["--workdir", cfg.workdir, "--split", "all", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--part all" in err and not os.path.exists(tmp_path / "a")
