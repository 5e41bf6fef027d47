"""Training end to end on the smoke preset: devices, resume after SIGKILL, divergence, reports, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import ROOT, run_module
from crnn_jax import config as config_lib
from crnn_jax.data import dataset as data_lib
from crnn_jax import train as train_lib
from crnn_jax import errors
from crnn_jax.training import loop
from crnn_jax.training import runlog

SMOKE = os.path.join(ROOT, "experiments", "smoke.py")


def metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f]


def load_json(*path):
    with open(os.path.join(*path)) as f:
        return json.load(f)


def train_losses(workdir):
    return [(r["step"], r["train_loss"]) for r in metrics(workdir) if "train_loss" in r]


def test_one_and_two_devices_give_the_same_losses(tmp_path):
    # Same global batch of 8: one device takes all 8, two take 4 each; BatchNorm statistics, gradients and
    # metrics are reduced over the pmap axis, so the losses must agree step by step.
    runs = {}
    for n in (1, 2):
        wd = str(tmp_path / f"dev{n}")
        run_module("crnn_jax.train", "--config", SMOKE, "--dropout", "0", "--workdir", wd, "--max-steps", "8",
                   devices=n)
        runs[n] = train_losses(wd)
    assert [s for s, _ in runs[1]] == list(range(1, 9))
    np.testing.assert_allclose([l for _, l in runs[2]], [l for _, l in runs[1]], rtol=1e-4)
    # ... and the run really did learn something, so equality is not two constant sequences.
    assert len({round(l, 6) for _, l in runs[1]}) > 4


# Every augmentation and regulariser on (and warm-up), for the resume test: a preset written by the test.
AUGMENTED = """from crnn_jax.config import load_preset
config = load_preset({smoke!r}).replace(spec_time_masks=2, spec_time_mask_frames=5, spec_freq_masks=2,
    spec_freq_mask_bins=10, mixup_alpha=0.4, label_smoothing=0.1, eq_db=6.0, speed_change=0.1,
    weight_decay=1e-3, warmup_steps=5)
"""


@pytest.mark.parametrize("augmented", [False, True], ids=["plain", "augmented"])
def test_kill_and_resume_ends_identical(tmp_path, augmented):
    preset = SMOKE
    if augmented:
        preset = str(tmp_path / "augmented.py")
        with open(preset, "w") as f:
            f.write(AUGMENTED.format(smoke=SMOKE))
    args = ["--config", preset, "--max-steps", "40", "--checkpoint-every", "4", "--log-every", "2"]
    ref = str(tmp_path / "ref")
    run_module("crnn_jax.train", *args, "--workdir", ref)

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
    out = run_module("crnn_jax.train", *args, "--workdir", wd)
    assert "resumed from checkpoint at step" in out.stdout
    assert metrics(wd) == metrics(ref)  # bit-identical: every loss, accuracy and eval line
    steps_timed = lambda d: [r["step"] for r in runlog.read_rows(os.path.join(d, "timing.jsonl"))]
    assert steps_timed(wd) == steps_timed(ref)  # nothing logged twice after the resume
    r1, r2 = load_json(ref, "results.json"), load_json(wd, "results.json")
    assert r1["test"]["confusion"] == r2["test"]["confusion"] and r1["test_accuracy"] == r2["test_accuracy"]
    assert r1["best_valid"] == r2["best_valid"] and r1["tested_step"] == r2["tested_step"]
    if augmented:  # the augmented run is not the plain one (the preset took effect)
        assert load_json(wd, "config.json")["mixup_alpha"] == 0.4


def smoke_config(tmp_path, **kw):
    cfg = config_lib.load_preset(SMOKE)
    return cfg.replace(workdir=str(tmp_path / "run"), **kw)


def test_run_writes_every_artifact_and_does_not_recompile(tmp_path, monkeypatch):
    traces = []
    real = loop.steps_lib.make_train_step

    def counting(*a, **k):
        step = real(*a, **k)

        def wrapped(state, batch):
            traces.append(1)  # runs only while tracing
            return step(state, batch)

        return wrapped

    monkeypatch.setattr(loop.steps_lib, "make_train_step", counting)
    cfg = smoke_config(tmp_path)
    res = loop.train(cfg, log=lambda *_: None)
    assert len(traces) == 1, f"train_step traced {len(traces)} times in {cfg.max_steps} steps"
    wd = cfg.workdir
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


def test_resume_refuses_a_different_config(tmp_path):
    cfg = smoke_config(tmp_path, max_steps=2)
    loop.train(cfg, log=lambda *_: None)
    with pytest.raises(config_lib.ConfigError, match="different config.*learning_rate"):
        loop.train(cfg.replace(learning_rate=0.5), log=lambda *_: None)
    # Extending the run is allowed and continues from the checkpoint.
    res = loop.train(cfg.replace(max_steps=4), log=lambda *_: None)
    assert res["resumed_from"] == 2 and res["steps"] == 4


@pytest.mark.parametrize("args,message", [
    (["--model", "rnn"], "--model must be one of"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--head", "tanh"], "--head must be one of"),
    (["--epochs", "many"], "--epochs: invalid int value"),
    (["--config", "experiments/nope.py"], "no such preset file"),
    (["--dropout", "1.5"], "--dropout must be in"),
])
def test_bad_flags_get_one_clear_line(args, message):
    p = run_module("crnn_jax.train", *args, check=False, timeout=120)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], p.stderr


def test_batch_not_divisible_by_devices_is_a_clear_error(tmp_path):
    p = run_module("crnn_jax.train", "--config", SMOKE, "--batch-size", "3", "--workdir", str(tmp_path / "w"),
                   devices=2, check=False, timeout=120)
    assert p.returncode == 2
    assert "--batch-size 3 is not divisible by the 2 devices" in p.stderr and "Traceback" not in p.stderr


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
