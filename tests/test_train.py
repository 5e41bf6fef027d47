"""Training end to end on the smoke preset: one device vs two (in process, and a real 2-device pmap), the
dropout keys of (seed, step), resume after SIGKILL, divergence, reports, bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, SMOKE, TWO_DEVICE_ARGS, read_json
from crnn_jax import config as config_lib
from crnn_jax import errors
from crnn_jax import train as train_lib
from crnn_jax.data import dataset as data_lib
from crnn_jax.training import loop
from crnn_jax.training import runlog


def metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f]


def load_json(*path):
    with open(os.path.join(*path)) as f:
        return json.load(f)


def train_losses(workdir):
    return [(r["step"], r["train_loss"]) for r in metrics(workdir) if "train_loss" in r]


# --- the train step in process: one device or two, dropout keys ------------------------------------------------
def test_one_and_two_devices_in_process_take_the_same_steps(tiny_train):
    # conftest's one-block CNN, its train step over one or two simulated devices (vmap with the pmap axis name).
    # The global batch of 8 on one device, or 4 on each of two: BatchNorm statistics, gradients and metrics are
    # reduced over the device axis, so three steps give the same losses and the same state, and the two devices
    # hold one state (the pmean makes it so; the real pmap returns it unreplicated, out_axes=None).
    runs = {}
    for n in (1, 2):
        s, losses = tiny_train.state, []
        for i in range(3):
            new, m = tiny_train.step(n_devices=n)(s, tiny_train.batch(i))
            leaves = [np.asarray(x) for x in jax.tree.leaves(new)]
            for leaf in leaves:
                assert all(np.array_equal(leaf[0], leaf[d]) for d in range(n)), "the devices' states differ"
            m = jax.tree.map(np.asarray, m)
            assert all(np.array_equal(m["loss"][0], m["loss"][d]) for d in range(n))
            s = jax.tree.map(lambda x: x[0], new)
            losses.append(float(m["loss"][0]))
        runs[n] = s, losses
    (s1, l1), (s2, l2) = runs[1], runs[2]
    assert int(s2.step) == int(s1.step) == 3
    np.testing.assert_allclose(l2, l1, rtol=1e-5)
    # Not a comparison of constants: the losses differ step to step and every parameter moved.
    assert len(set(l1)) == 3
    assert all(np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4
               for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(tiny_train.state.params)))
    # The running averages are the global batch's (per-device ones would differ in the variance), and the
    # parameters moved alike (Algorithm 8.6's first steps are ~ lr sign(g): float32 noise on g near 0 can
    # move an element by up to ~1e-4 here; a device's own gradient moves many by ~lr).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), s2.batch_stats, s1.batch_stats)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=3e-4), s2.params, s1.params)


def test_dropout_masks_are_a_function_of_seed_and_step(tiny_train):
    # The train step draws dropout masks from (seed, step, device): the same state at the same step gives the
    # same loss; the same state at the next step another mask, hence another loss. Without dropout the step
    # number changes nothing before the update (the learning rate reads the optimiser's own count).
    def loss_at(dropout, s):
        _, m = tiny_train.step(dropout=dropout)(tiny_train.state.replace(step=jnp.int32(s)), tiny_train.batch(0))
        return float(np.asarray(m["loss"])[0])

    assert loss_at(0.5, 3) == loss_at(0.5, 3)
    assert len({loss_at(0.5, s) for s in (3, 4, 5)}) == 3
    assert loss_at(0.0, 3) == loss_at(0.0, 4) == loss_at(0.0, 5)


# --- one device vs a real 2-device pmap ---------------------------------------------------------------------
@pytest.mark.slow
def test_one_and_two_devices_give_the_same_losses(two_device_run, tmp_path):
    # The same 8 steps in this process (one CPU device) and by conftest's process with two: one device takes the
    # global batch of 8, two take 4 each; the losses must agree step by step.
    one = train_lib.parse_config([*TWO_DEVICE_ARGS, "--workdir", str(tmp_path / "one")])
    loop.train(one, log=lambda *_: None)
    runs = {1: train_losses(one.workdir), 2: train_losses(two_device_run)}
    assert [s for s, _ in runs[1]] == [s for s, _ in runs[2]] == list(range(1, 9))
    np.testing.assert_allclose([l for _, l in runs[2]], [l for _, l in runs[1]], rtol=1e-4)
    # ... and the run really did learn something, so equality is not two constant sequences.
    assert len({round(l, 6) for _, l in runs[1]}) > 4


# --- resume after SIGKILL ------------------------------------------------------------------------------------
# Every augmentation and regulariser on (and warm-up), for the resume test: a preset written by the test.
AUGMENTED = """from crnn_jax.config import load_preset
config = load_preset({smoke!r}).replace(spec_time_masks=2, spec_time_mask_frames=5, spec_freq_masks=2,
    spec_freq_mask_bins=10, mixup_alpha=0.4, label_smoothing=0.1, eq_db=6.0, speed_change=0.1,
    weight_decay=1e-3, warmup_steps=5)
"""


@pytest.mark.slow
def test_kill_and_resume_ends_identical(tmp_path):
    # The process boundary is the point: a run SIGKILLed wherever it is (every augmentation on, so their keys
    # of (seed, step) are tested too) and started again ends bit for bit as the run never interrupted. That
    # reference and the resumption run in this process; in-process resumes of the plain preset from a
    # checkpoint are test_failures' (damaged checkpoints, kills after the last checkpoint).
    preset = str(tmp_path / "augmented.py")
    with open(preset, "w") as f:
        f.write(AUGMENTED.format(smoke=SMOKE))
    args = ["--config", preset, "--max-steps", "40", "--checkpoint-every", "4", "--log-every", "2"]
    wd = str(tmp_path / "killed")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    proc = subprocess.Popen([sys.executable, "-m", "crnn_jax.train", *args, "--workdir", wd], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckdir = os.path.join(wd, "checkpoints")
    deadline = time.time() + 240
    try:
        # Kill once the run is under way (a few checkpoints written), wherever it happens to be.
        while time.time() < deadline and proc.poll() is None:
            done = [d for d in os.listdir(ckdir) if d.isdigit()] if os.path.isdir(ckdir) else []
            if done and max(map(int, done)) >= 12:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed; make it longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = max(r["step"] for r in metrics(wd))
    assert killed_at < 40
    ref = train_lib.parse_config([*args, "--workdir", str(tmp_path / "ref")])
    loop.train(ref, log=lambda *_: None)
    said = []
    loop.train(ref.replace(workdir=wd), log=said.append)
    assert any("resumed from checkpoint at step" in line for line in said)
    assert metrics(wd) == metrics(ref.workdir)  # bit-identical: every loss, accuracy and eval line
    steps_timed = lambda d: [r["step"] for r in runlog.read_rows(os.path.join(d, "timing.jsonl"))]
    assert steps_timed(wd) == steps_timed(ref.workdir)  # nothing logged twice after the resume
    r1, r2 = load_json(ref.workdir, "results.json"), load_json(wd, "results.json")
    assert r1["test"]["confusion"] == r2["test"]["confusion"] and r1["test_accuracy"] == r2["test_accuracy"]
    assert r1["best_valid"] == r2["best_valid"] and r1["tested_step"] == r2["tested_step"]
    assert load_json(wd, "config.json")["mixup_alpha"] == 0.4  # the augmented preset took effect


# --- one run's files; divergence; resume refusals ------------------------------------------------------------
def smoke_config(tmp_path, **kw):
    cfg = config_lib.load_preset(SMOKE)
    return cfg.replace(workdir=str(tmp_path / "run"), **kw)


def test_run_writes_every_artifact_and_does_not_recompile(smoke_record):
    cfg, res, wd = smoke_record.cfg, smoke_record.results, smoke_record.workdir
    assert smoke_record.traces == 1, f"train_step traced {smoke_record.traces} times in {cfg.max_steps} steps"
    for name in ("config.json", "metrics.jsonl", "results.json", "confusion.png", "curves.png", "split.json"):
        assert os.path.getsize(os.path.join(wd, name)) > 0, name
    assert config_lib.Config.from_dict(load_json(wd, "config.json")) == cfg
    saved = load_json(wd, "results.json")
    for key in ("test_accuracy", "n_test", "steps", "train_seconds"):
        assert key in saved
    assert saved["steps"] == cfg.max_steps and saved["n_test"] == res["test"]["n_songs"]
    conf = np.array(saved["test"]["confusion"])
    assert conf.sum() == saved["n_test"] and np.trace(conf) / conf.sum() == pytest.approx(saved["test_accuracy"])
    assert set(saved["test"]["per_class"]) == set(saved["class_names"])
    rows = metrics(wd)
    assert all({"step", "train_loss", "train_accuracy"} <= set(r) for r in rows if "train_loss" in r)
    # Wall times: one timing line per validation pass, rising, and the first crossing of the target reported.
    timing = runlog.read_rows(os.path.join(wd, "timing.jsonl"))
    evals = [r for r in rows if "eval_accuracy" in r]
    assert [(t["step"], t["eval_accuracy"]) for t in timing] == [(r["step"], r["eval_accuracy"]) for r in evals]
    assert all(0 < a["seconds"] <= b["seconds"] for a, b in zip(timing, timing[1:]))
    assert saved["time_to_accuracy"] == runlog.time_to_accuracy(timing, loop.TARGET_ACCURACY)
    assert any({"step", "eval_loss", "eval_accuracy"} <= set(r) for r in rows)
    # The best validation pass (accuracy, then lower loss, then earlier) is the tested checkpoint, kept in best/.
    top = max(evals, key=lambda r: (r["eval_accuracy"], -r["eval_loss"], -r["step"]))
    assert saved["tested_checkpoint"] == "best" and saved["tested_step"] == top["step"]
    assert saved["best_valid"] == {"step": top["step"], "accuracy": top["eval_accuracy"], "loss": top["eval_loss"]}
    assert os.listdir(os.path.join(wd, "best")) == [str(top["step"])]
    # Test songs and training songs never overlap (split by song).
    split = load_json(wd, "split.json")
    assert not set(split["train"]) & set(split["test"]) and not set(split["valid"]) & set(split["test"])


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = data_lib.sample_batch

    def poisoned(seed, step, **kw):
        b = real(seed, step, **kw)
        return b._replace(gains=b.gains * np.float32("inf")) if step >= 4 else b  # step index 4 = step 5

    monkeypatch.setattr(data_lib, "sample_batch", poisoned)
    cfg = smoke_config(tmp_path, max_steps=8, checkpoint_every=2, log_every=1)
    with pytest.raises(errors.Diverged, match=r"non-finite loss at step 5.*checkpoint \(step 4\)"):
        loop.train(cfg, log=lambda *_: None)
    from crnn_jax.training.checkpoint import Checkpointer

    ck = Checkpointer(os.path.join(cfg.workdir, "checkpoints"))
    assert ck.latest_step() == 4
    ck.close()


def test_resume_refuses_a_different_config(smoke_record, tmp_path):
    wd = str(tmp_path / "run")
    shutil.copytree(smoke_record.workdir, wd)  # finished at step 6
    cfg = smoke_record.cfg.replace(workdir=wd)
    with pytest.raises(config_lib.ConfigError, match="different config.*learning_rate"):
        loop.train(cfg.replace(learning_rate=0.5), log=lambda *_: None)


@pytest.mark.slow  # trains; the fast tier resumes from a checkpoint in test_failures' damaged-checkpoint test
def test_a_finished_run_may_be_extended(smoke_record, tmp_path):
    wd = str(tmp_path / "run")
    shutil.copytree(smoke_record.workdir, wd)  # finished at step 6
    cfg = smoke_record.cfg.replace(workdir=wd)
    # Extending the run is allowed and continues from the checkpoint.
    res = loop.train(cfg.replace(max_steps=8), log=lambda *_: None)
    assert res["resumed_from"] == 6 and res["steps"] == 8
    assert [r["step"] for r in metrics(wd) if "train_loss" in r] == list(range(1, 9))


# --- the command line ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--model", "rnn"], "--model must be one of"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--head", "tanh"], "--head must be one of"),
    (["--epochs", "many"], "--epochs: invalid int value"),
    (["--config", "experiments/nope.py"], "no such preset file"),
    (["--dropout", "1.5"], "--dropout must be in"),
])
def test_bad_flags_get_one_clear_line(args, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # a relative --config, as typed in the checkout
    assert train_lib.main(args) == 2
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crnn_jax.train: error: ") and message in lines[0], cap.err
    assert cap.out == ""


def test_batch_not_divisible_by_devices_is_a_clear_error(tmp_path, capsys, monkeypatch):
    # This process has one device; the check reads jax.device_count() before anything else.
    monkeypatch.setattr(jax, "device_count", lambda *a: 2)
    assert train_lib.main(["--config", SMOKE, "--batch-size", "3", "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "--batch-size 3 is not divisible by the 2 devices" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not os.path.exists(tmp_path / "w")


def test_preset_then_flags_override():
    cfg = train_lib.parse_config(["--config", SMOKE, "--learning-rate", "0.01", "--model", "cnn"])
    assert cfg.learning_rate == 0.01 and cfg.model == "cnn" and cfg.conv_channels == (8, 16, 16, 16)
    assert train_lib.parse_config([]) == config_lib.default_config(jax.default_backend())


def test_time_to_accuracy_is_the_first_crossing():
    rows = [{"step": 10, "seconds": 5.0, "eval_accuracy": 0.5}, {"step": 20, "seconds": 9.0, "eval_accuracy": 0.9},
            {"step": 30, "seconds": 12.0, "eval_accuracy": 0.95}]
    assert runlog.time_to_accuracy(rows, 0.9) == {"target": 0.9, "step": 20, "seconds": 9.0}
    assert runlog.time_to_accuracy(rows, 0.99) == {"target": 0.99, "step": None, "seconds": None}


def test_best_selection_on_a_constructed_history():
    from crnn_jax.training.selection import Best

    rows = [{"step": 2, "eval_accuracy": 0.5, "eval_loss": 1.0}, {"step": 2, "train_loss": 9.0},
            {"step": 4, "eval_accuracy": 0.7, "eval_loss": 1.2}, {"step": 6, "eval_accuracy": 0.7, "eval_loss": 0.9},
            {"step": 8, "eval_accuracy": 0.7, "eval_loss": 0.9}, {"step": 10, "eval_accuracy": 0.6, "eval_loss": 0.1},
            {"step": 12, "eval_accuracy": 0.8, "eval_loss": 2.0}]
    # Accuracy first; an equal accuracy wins on lower loss (6 over 4); an exact tie keeps the earlier (6, not 8).
    assert Best.replay(rows, upto=10).as_dict() == {"step": 6, "accuracy": 0.7, "loss": 0.9}
    assert Best.replay(rows, upto=12).step == 12
    assert Best.replay(rows, upto=5).step == 4 and Best.replay(rows, upto=1).as_dict() is None
    # Early stopping counts passes since the best: 8 and 10 did not improve on 6.
    b = Best.replay(rows, upto=10, patience=2)
    assert b.since == 2 and b.stop
    assert not Best.replay(rows, upto=8, patience=2).stop and not Best.replay(rows, upto=10).stop


@pytest.mark.slow
def test_early_stop_resumes_to_the_same_step(tmp_path):
    # Validation every 2 steps, patience 2: on the smoke preset the best pass is at step 4 and the run stops at 8.
    cfg = smoke_config(tmp_path, max_steps=24, eval_every=2, early_stop_patience=2, log_every=2, checkpoint_every=2)
    res = loop.train(cfg, log=lambda *_: None)
    stop = res["stopped_early_at"]
    assert stop is not None and stop < 24 and res["steps"] == stop
    assert max(r["step"] for r in metrics(cfg.workdir)) == stop
    assert res["tested_checkpoint"] == "best" and res["tested_step"] == res["best_valid"]["step"] < stop
    # A run broken at step 4 (a validation step) and resumed stops at the same step with the same metrics.
    broken = cfg.replace(workdir=str(tmp_path / "broken"))
    loop.train(broken.replace(max_steps=4), log=lambda *_: None)
    again = loop.train(broken, log=lambda *_: None)
    assert again["resumed_from"] == 4 and again["stopped_early_at"] == stop
    assert metrics(broken.workdir) == metrics(cfg.workdir)
    assert again["best_valid"] == res["best_valid"] and again["test"]["confusion"] == res["test"]["confusion"]
    # Started again after it stopped: it stops at once, trains nothing and logs nothing new.
    rerun = loop.train(cfg, log=lambda *_: None)
    assert rerun["resumed_from"] == stop and rerun["stopped_early_at"] == stop
    assert metrics(cfg.workdir) == metrics(broken.workdir)


def test_an_ensemble_is_its_members_runs_and_their_workdirs():
    base = config_lib.load_preset(SMOKE).replace(workdir="runs/x", ensemble=3)
    members = base.members()
    assert [(c.member, c.ensemble, c.workdir) for c in members] == \
        [(0, 1, "runs/x"), (1, 1, "runs/x-m1"), (2, 1, "runs/x-m2")]
    assert members[0] == base.replace(ensemble=1)  # member 0 is the single run, exactly
    assert len({c.train_seed for c in members}) == 3 and len({c.seed for c in members}) == 1  # one split
    default = base.replace(workdir="", data="synthetic", ensemble=2).members()
    assert [c.resolved_workdir() for c in default] == [os.path.join("runs", "crnn-synthetic-seed0"),
                                                       os.path.join("runs", "crnn-synthetic-seed0-m1")]
    assert base.replace(ensemble=1).members() == [base.replace(ensemble=1)]
    assert [c.workdir for c in base.replace(workdir="runs/x/", ensemble=2).members()] == ["runs/x/", "runs/x-m1"]
    with pytest.raises(errors.ConfigError, match=r"^--workdir \. names no folder of its own for member 0"):
        base.replace(workdir=".", ensemble=2).members()
    with pytest.raises(errors.ConfigError, match=r"^ensemble=2 trains members 0..1 itself; leave member=1 out"):
        base.replace(ensemble=2, member=1)


def test_a_split_by_song_of_a_folder_ends_with_one_artist_reminder(tmp_path, monkeypatch):
    # Which runs are reminded: a random or k-fold split by song of a user's folder, not the synthetic set, not
    # an artist-grouped or artist-filtered split, not a separate test set.
    folder = str(tmp_path / "genres")
    base = config_lib.load_preset(SMOKE).replace(data=folder, split="random", workdir=str(tmp_path / "r"))
    assert loop.artist_note(base).startswith("note: this split keeps songs apart, not artists")
    assert loop.artist_note(base.replace(split="kfold:5")) == loop.artist_note(base)
    for other in (dict(data="synthetic"), dict(group_by="artist"), dict(split="fault-filtered"),
                  dict(split="all", test_data=str(tmp_path / "others"))):
        assert loop.artist_note(base.replace(**other)) is None, other
    # train_members says it once, as the last line, after every member's accuracy and the ensemble's.
    def fake_train(cfg, log):
        log(f"test accuracy of member {cfg.member}")
        logp = [[0.0, -1.0], [-1.0, 0.0]] if cfg.member else [[0.0, -2.0], [0.0, -1.0]]
        return {"test": {"song_log_probs": logp, "song_labels": [0, 1]}, "class_names": ["a", "b"],
                "test_accuracy": 1.0 if cfg.member else 0.5}
    monkeypatch.setattr(loop, "train", fake_train)
    for ensemble in (1, 2):
        said = []
        loop.train_members(base.replace(ensemble=ensemble), log=said.append)
        assert said[-1] == loop.artist_note(base) and said.count(said[-1]) == 1, said
        assert said[-2].startswith("ensemble of 2") if ensemble == 2 else said == ["test accuracy of member 0",
                                                                                    said[-1]]
    said = []
    loop.train_members(base.replace(group_by="artist", ensemble=2), log=said.append)
    assert said[-1].startswith("ensemble of 2") and not any(line.startswith("note:") for line in said)


@pytest.mark.slow  # trains a second network
def test_train_with_an_ensemble_trains_each_member_and_scores_their_mean(smoke_record, tmp_path, capsys):
    wd = str(tmp_path / "ens")
    args = ["--config", SMOKE, "--set", "ensemble=2", "--workdir", wd]
    assert train_lib.main(args) == 0
    out = capsys.readouterr().out
    r0, r1 = (read_json(os.path.join(w, "results.json")) for w in (wd, wd + "-m1"))
    c0, c1 = (read_json(os.path.join(w, "config.json")) for w in (wd, wd + "-m1"))
    assert (c0["member"], c0["ensemble"], c1["member"], c1["ensemble"]) == (0, 1, 1, 1)
    # Member 0 is the session's single smoke run, bit for bit; member 1 another network on the same songs.
    assert r0["test"] == json.loads(json.dumps(smoke_record.results["test"]))
    assert r1["test_songs"] == r0["test_songs"] and r1["test"]["song_log_probs"] != r0["test"]["song_log_probs"]
    ds, split = loop.load_data(smoke_record.cfg)
    assert r0["test"]["song_labels"] == ds.labels[split["test"]].tolist()
    mean = (np.array(r0["test"]["song_log_probs"]) + np.array(r1["test"]["song_log_probs"])) / 2
    acc = float(np.mean(mean.argmax(-1) == ds.labels[split["test"]]))  # the oracle
    line = f"ensemble of 2: test accuracy {acc:.4f} by song (members alone: {r0['test_accuracy']:.4f}, " \
           f"{r1['test_accuracy']:.4f}); predict or evaluate with --workdir {wd} --workdir {wd}-m1"
    assert line in out.splitlines()
    # Again: both members are finished runs; the same line, nothing retrained.
    assert train_lib.main(args) == 0
    again = capsys.readouterr().out
    assert line in again.splitlines() and again.count("resumed from checkpoint at step 6") == 2
