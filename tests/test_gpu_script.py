"""experiments/gpu/run.sh --quick: every stage of the GPU script runs on a CPU at toy sizes and reports
sane numbers, so the script cannot rot between the sessions that are lent a GPU."""

import json
import math
import os
import subprocess

import pytest

from conftest import ROOT

STAGES = ("tests", "mel", "epoch_gtzan", "epoch_recipe", "profile", "train_fp32", "train_default", "train_bf16",
          "deterministic")


def run_script(out, *flags, timeout=600):
    env = {**os.environ, "OUT": str(out), "PYTHONWARNINGS": "error::DeprecationWarning,error::FutureWarning"}
    p = subprocess.run(["bash", os.path.join("experiments", "gpu", "run.sh"), *flags], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"run.sh {' '.join(flags)} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return json.loads((out / "gpu_results.json").read_text()), (out / "gpu_results.md").read_text(), p.stdout


def test_quick_mode_runs_every_stage_with_sane_numbers(tmp_path):
    # A budget no loaded CI machine runs out of: what is checked here is every stage, not the clock.
    r, md, log = run_script(tmp_path, "--quick", "--budget-s", "1500")
    assert r["mode"] == "quick" and tuple(r["stages"]) == STAGES
    for name, s in r["stages"].items():
        assert s.get("ok") is True, f"{name}: {s}"
        assert s["stage_s"] > 0 and f"{name}: ok" in log  # progress printed as it goes

    t = r["stages"]["tests"]
    if r["device"]["backend"] == "cpu":  # the GPU-vs-CPU tests skip, saying why
        assert t["counts"].get("skipped", 0) >= 3 and not t["counts"].get("failed")
        assert any("no GPU" in line for line in t["skip_reasons"])

    m = r["stages"]["mel"]
    assert m["clips"] == 4 and m["clip_seconds"] == 1.0
    assert m["clips_per_s"] == pytest.approx(m["clips"] / m["seconds"])
    assert m["bytes_per_s"] >= m["min_bytes_per_s"] > 0  # XLA moves at least the floor it is compared with

    for name, batch in (("epoch_gtzan", 32), ("epoch_recipe", 4)):
        e = r["stages"][name]
        assert e["clips"] == 40 and e["batch"] == batch and e["steps_per_epoch"] == math.ceil(40 / batch)
        assert 0 < e["epoch_s"] < e["first_epoch_s"]  # the timed epoch is the second: no compilation in it
        assert e["clips_per_s"] == pytest.approx(40 / e["epoch_s"])
        assert 0.0 <= e["test_accuracy"] <= 1.0
    assert r["stages"]["epoch_gtzan"]["preset"] == "gtzan.py" and r["stages"]["epoch_recipe"]["preset"] == "seed_report.py"

    for prec in ("fp32", "bf16"):
        g = r["stages"][f"train_{prec}"]
        (entry,) = g["runs"]
        assert entry["precision"] == prec and entry["batch"] == 4 and entry["flops_per_clip"] > 0
        jax_row = entry["rows"][0]
        assert jax_row["impl"] == "jax" and jax_row["compile_s"] > 0
        assert jax_row["clips_per_s"] == pytest.approx(4 / jax_row["median_s"])
        assert (len(entry["rows"]) == 2) == (g["torch_skipped"] is None)

    d = r["stages"]["train_default"]
    assert d["steps"] == 6 and 0.0 <= d["test_accuracy"] <= 1.0 and d["wall_s"] > d["train_seconds"] > 0

    p = r["stages"]["profile"]
    ms = [row["ms"] for row in p["top"]]
    assert p["top"] and ms == sorted(ms, reverse=True) and 0 < sum(ms) <= p["op_total_ms"] + 1e-6
    assert sum(row["share"] for row in p["top"]) <= 1.0 + 1e-9

    det = r["stages"]["deterministic"]
    assert det["median_s"]["default"] > 0 and det["slowdown"] == pytest.approx(
        det["median_s"]["deterministic"] / det["median_s"]["default"])

    for heading in ("## mel", "## one epoch", "## bench train, fp32", "## bench train, bf16", "## profile",
                    "`python -m crnn_jax.train`", "--xla_gpu_deterministic_ops"):
        assert heading in md, heading


def test_an_exhausted_budget_skips_every_stage_and_still_writes(tmp_path):
    r, md, _ = run_script(tmp_path, "--quick", "--budget-s", "0", timeout=120)
    assert tuple(r["stages"]) == STAGES
    assert all("budget" in s["skipped"] for s in r["stages"].values())
    assert md.count("skipped") == len(STAGES)
