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
from crnn_jax import data as data_lib
from crnn_jax import report
from crnn_jax import train as train_lib

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


def test_kill_and_resume_ends_identical(tmp_path):
    args = ["--config", SMOKE, "--max-steps", "40", "--checkpoint-every", "4", "--log-every", "2"]
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
    steps_timed = lambda d: [r["step"] for r in report.read_metrics(os.path.join(d, "timing.jsonl"))]
    assert steps_timed(wd) == steps_timed(ref)  # nothing logged twice after the resume
    r1, r2 = load_json(ref, "results.json"), load_json(wd, "results.json")
    assert r1["test"]["confusion"] == r2["test"]["confusion"] and r1["test_accuracy"] == r2["test_accuracy"]


def smoke_config(tmp_path, **kw):
    cfg = config_lib.load_preset(SMOKE)
    return cfg.replace(workdir=str(tmp_path / "run"), **kw)


def test_run_writes_every_artifact_and_does_not_recompile(tmp_path, monkeypatch):
    traces = []
    real = train_lib.steps_lib.make_train_step

    def counting(*a, **k):
        step = real(*a, **k)

        def wrapped(state, batch):
            traces.append(1)  # runs only while tracing
            return step(state, batch)

        return wrapped

    monkeypatch.setattr(train_lib.steps_lib, "make_train_step", counting)
    cfg = smoke_config(tmp_path)
    res = train_lib.train(cfg, log=lambda *_: None)
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
    timing = report.read_metrics(os.path.join(wd, "timing.jsonl"))
    evals = [r for r in rows if "eval_accuracy" in r]
    assert [(t["step"], t["eval_accuracy"]) for t in timing] == [(r["step"], r["eval_accuracy"]) for r in evals]
    assert all(0 < a["seconds"] <= b["seconds"] for a, b in zip(timing, timing[1:]))
    assert saved["time_to_accuracy"] == train_lib.time_to_accuracy(timing, train_lib.TARGET_ACCURACY)
    assert any({"step", "eval_loss", "eval_accuracy"} <= set(r) for r in rows)
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
    with pytest.raises(train_lib.Diverged, match=r"non-finite loss at step 5.*checkpoint \(step 4\)"):
        train_lib.train(cfg, log=lambda *_: None)
    from crnn_jax.checkpoint import Checkpointer

    ck = Checkpointer(os.path.join(cfg.workdir, "checkpoints"))
    assert ck.latest_step() == 4
    ck.close()


def test_resume_refuses_a_different_config(tmp_path):
    cfg = smoke_config(tmp_path, max_steps=2)
    train_lib.train(cfg, log=lambda *_: None)
    with pytest.raises(config_lib.ConfigError, match="different config.*learning_rate"):
        train_lib.train(cfg.replace(learning_rate=0.5), log=lambda *_: None)
    # Extending the run is allowed and continues from the checkpoint.
    res = train_lib.train(cfg.replace(max_steps=4), log=lambda *_: None)
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
    assert train_lib.time_to_accuracy(rows, 0.9) == {"target": 0.9, "step": 20, "seconds": 9.0}
    assert train_lib.time_to_accuracy(rows, 0.99) == {"target": 0.99, "step": None, "seconds": None}
