"""experiments/gpu/run.sh and run.py: the one GPU call cannot lose what it measured. A raising stage, a stage
past its time limit and a failing torch cost only their own numbers; the JSON is on disk before the first stage
and after every one; the plan fits the call with 120 s to spare; a CPU fallback stops a full run. The quick
mode runs every stage at toy sizes on this CPU (one run, shared by the tests below)."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import ROOT

GPU_DIR = os.path.join(ROOT, "experiments", "gpu")


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_py = _load("gpu_run", os.path.join(GPU_DIR, "run.py"))  # puts experiments/gpu on sys.path
import gpu_report  # noqa: E402  (found through the path run.py set)
import gpu_schedule as schedule  # noqa: E402
import torch_worker  # noqa: E402

# What the quick run survives: torch raising in the bf16 grid, one stage raising, one stage past its limit.
# (deterministic and epoch_recipe: the two whose paths other stages share, and whose compiles cost the most.)
INJECT = "torch-fail:bf16,stage-raise:deterministic,overrun:epoch_recipe"
FAILED = {"deterministic", "epoch_recipe"}
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def run_script(out, *flags, env=None, timeout=600):
    # PYTHON: run.sh's interpreter is this one (on PATH, python3 may be another Python with or without torch)
    env = {**os.environ, "OUT": str(out), "CRNN_GPU_CACHE": str(out / "cache"), "PYTHON": sys.executable,
           "PYTHONWARNINGS": "error::DeprecationWarning,error::FutureWarning", **(env or {})}
    env.pop("CRNN_GPU_T0", None)
    p = subprocess.run(["bash", os.path.join("experiments", "gpu", "run.sh"), *flags], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    results = json.loads((out / "gpu_results.json").read_text())
    return results, (out / "gpu_results.md").read_text(), p


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    results, md, p = run_script(out, "--quick", "--budget-s", "1500", "--inject", INJECT)
    return results, md, p


def _plan_rows(text):
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    return [(r[1], int(r[2])) for r in rows]


def test_the_plan_fits_the_call_with_120_s_to_spare_in_order_of_value(capsys):
    assert run_py.main(["--plan"]) == 0
    text = capsys.readouterr().out
    rows = _plan_rows(text)
    names = [n for n, _ in rows]
    assert sorted(names) == sorted(run_py.STAGES) and names[0] == "backend" and names[-1] == "tests"
    headline = ["train_fp32", "train_bf16", "epoch_gtzan", "mel"]
    assert names[1:5] == headline  # the numbers the GPU call is for run first
    total = run_py.STARTUP_S + sum(s for _, s in rows)
    budget = float(re.search(r"--budget-s (\d+)", text).group(1))  # the default budget
    assert total <= budget <= run_py.LIMIT_S - 120 and run_py.LIMIT_S == 600, text


def _fake_results():
    return {"date": "d", "mode": "quick", "budget_s": 9.0, "python": "3", "device": {}, "versions": {}, "stages": {}}


def test_each_stage_is_guarded_and_written_before_and_after(tmp_path):
    results = _fake_results()
    write = lambda: gpu_report.write(results, str(tmp_path))
    on_disk = lambda: json.loads((tmp_path / "gpu_results.json").read_text())["stages"]
    seen = {}

    def first(ctx):
        seen["first"] = on_disk()  # written before the stage began
        return {"ok": True, "x": 1}

    def raises(ctx):
        ctx.save(partial=1)
        raise ValueError("boom")

    def overruns(ctx):
        ctx.save(done=2)
        time.sleep(30)  # the alarm ends this at the limit
        return {"ok": True}

    def last(ctx):
        seen["last"] = on_disk()
        return {"ok": True}

    runners = {"first": first, "raises": raises, "overruns": overruns, "last": last, "huge": last}
    needs = {"first": 0, "raises": 0, "overruns": 0, "last": 0, "huge": 10**6}
    make_ctx = lambda name, limit: schedule.StageContext(name, limit, sizes=dict, quick=True, tmp=str(tmp_path),
                                                       results=results, write=write, shared={}, inject={},
                                                       log=lambda m: None)
    start = time.monotonic()
    schedule.run_stages(list(runners), runners, needs, schedule.Budget(60), results, write, make_ctx,
                      forced_limits={"overruns": 0.3}, log=lambda m: None)
    assert time.monotonic() - start < 10
    assert list(seen["first"]) == ["first"] and seen["first"]["first"]["running"]
    st = on_disk()
    assert st["first"]["ok"] and st["first"]["x"] == 1
    assert st["raises"]["ok"] is False and st["raises"]["error"] == "ValueError: boom" and st["raises"]["partial"] == 1
    assert st["overruns"]["overran"] and st["overruns"]["done"] == 2 and st["overruns"]["stage_s"] < 5
    assert seen["last"]["raises"]["error"] == "ValueError: boom" and seen["last"]["overruns"]["overran"]
    assert st["last"]["ok"] and "budget" in st["huge"]["skipped"]


def test_a_stage_may_use_spare_time_but_not_what_later_stages_that_fit_were_planned(tmp_path):
    results = _fake_results()
    write = lambda: gpu_report.write(results, str(tmp_path))
    make_ctx = lambda name, limit: schedule.StageContext(name, limit, sizes=dict, quick=True, tmp=str(tmp_path),
                                                       results=results, write=write, shared={}, inject={},
                                                       log=lambda m: None)
    quick_ok = lambda ctx: {"ok": True}
    schedule.run_stages(["a", "b", "c"], dict.fromkeys("abc", quick_ok), {"a": 10, "b": 20, "c": 10**6},
                      schedule.Budget(100), results, write, make_ctx, log=lambda m: None)
    st = results["stages"]
    assert st["a"]["limit_s"] == pytest.approx(80, abs=1)  # b's 20 s kept back; c can never fit, so not c's
    assert st["b"]["limit_s"] == pytest.approx(100, abs=1) and "budget" in st["c"]["skipped"]


def test_a_failed_backend_check_stops_the_run(tmp_path):
    results = _fake_results()
    write = lambda: gpu_report.write(results, str(tmp_path))

    def backend(ctx):
        raise RuntimeError("JAX's backend is 'cpu', not 'gpu'")

    ran = []
    runners = {"backend": backend, "mel": lambda ctx: ran.append("mel") or {"ok": True}}
    make_ctx = lambda name, limit: schedule.StageContext(name, limit, sizes=dict, quick=False, tmp=str(tmp_path),
                                                       results=results, write=write, shared={}, inject={},
                                                       log=lambda m: None)
    schedule.run_stages(["backend", "mel"], runners, {"backend": 0, "mel": 0}, schedule.Budget(60), results, write,
                      make_ctx, log=lambda m: None)
    assert not ran and "backend check failed" in results["stages"]["mel"]["skipped"]


def test_pytest_outcomes_are_judged_and_a_gpu_run_that_skips_for_no_gpu_fails():
    ok = ("tests/test_gpu.py::test_a PASSED   [ 50%]\ntests/test_gpu.py::test_b SKIPPED (x)  [100%]\n"
          "SKIPPED [1] tests/test_gpu.py:28: no GPU visible to JAX\n==== 1 passed, 1 skipped in 2.0s ====\n")
    assert gpu_report.judge_pytest(ok, 0, "cpu")["ok"]
    on_gpu = gpu_report.judge_pytest(ok, 0, "gpu")
    assert not on_gpu["ok"] and "fell back to the CPU" in on_gpu["problems"][0]
    killed = gpu_report.judge_pytest("tests/test_ops.py::test_c FAILED  [ 10%]\n", None, "gpu")
    assert not killed["ok"] and killed["counts"] == {"failed": 1} and killed["failed_tests"] == ["tests/test_ops.py::test_c"]
    assert not gpu_report.judge_pytest("ERROR: file not found\n", 4, "gpu")["ok"]


FAKE_WORKER = """import json, sys, time
print(json.dumps({"ready": True, "torch": "0", "cuda": False}), flush=True)
mode = sys.argv[1]
for line in sys.stdin:
    if mode == "die":
        sys.exit(3)
    if mode == "hang":
        time.sleep(60)
    print(json.dumps({"impl": "torch (eager)", "times": [0.1]}), flush=True)
"""


@pytest.mark.slow
def test_a_torch_worker_that_dies_or_hangs_costs_only_its_answer():
    script = [sys.executable, "-c", FAKE_WORKER]
    ok = torch_worker.TorchWorker(gpu=False, cmd=script + ["ok"], log=lambda m: None)
    assert ok.call({}, timeout=20) == {"impl": "torch (eager)", "times": [0.1]}
    ok.close()

    dies = torch_worker.TorchWorker(gpu=False, cmd=script + ["die"], max_starts=2, log=lambda m: None)
    assert "exited with code 3" in dies.call({}, timeout=20)["error"]
    assert "exited with code 3" in dies.call({}, timeout=20)["error"]  # started once more, died again
    assert "gave up after 2 start(s)" in dies.call({}, timeout=20)["error"] and dies.proc is None

    hangs = torch_worker.TorchWorker(gpu=False, cmd=script + ["hang"], log=lambda m: None)
    start = time.monotonic()
    assert "no answer" in hangs.call({}, timeout=1)["error"]
    assert time.monotonic() - start < 10 and hangs.proc is None  # killed, not waited for

    no_cuda = torch_worker.TorchWorker(gpu=True, cmd=script + ["ok"])  # a GPU run whose torch sees no GPU
    assert "sees no CUDA device" in no_cuda.call({}, timeout=20)["error"] and no_cuda.unavailable()


@pytest.mark.slow
def test_quick_mode_keeps_every_other_stage_through_a_torch_failure_a_raise_and_an_overrun(quick):
    r, md, p = quick
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]  # failures, reported, not a crash
    assert tuple(r["stages"]) == run_py.STAGES and r["status"] == "complete"
    assert set(r["failed"]) == FAILED
    assert "injected failure in stage deterministic" in r["failed"]["deterministic"]
    assert r["stages"]["epoch_recipe"]["overran"] and "time limit" in r["failed"]["epoch_recipe"]
    assert r["stages"]["epoch_recipe"]["stage_s"] < 20  # stopped, not run to the end
    for name, s in r["stages"].items():
        if name not in FAILED:
            assert s["ok"] is True, f"{name}: {s}"
            assert f"{name}: ok" in p.stdout  # progress printed as it goes
    bf16 = r["stages"]["train_bf16"]["runs"][0]
    assert bf16["rows"][0]["impl"] == "jax" and bf16["rows"][0]["median_s"] > 0  # JAX's numbers stand beside torch's
    assert "jax_speedup" not in bf16
    assert "OVERRAN" in md and "FAILED: RuntimeError: injected failure in stage deterministic" in md
    if HAVE_TORCH:  # the worker raised the injected failure: its row says so
        assert "injected torch failure" in bf16["rows"][1]["error"] and "injected torch failure" in md
    else:  # fp32's call found no torch; bf16 does not ask again and says why
        assert len(bf16["rows"]) == 1 and "No module named 'torch'" in bf16["torch_skipped"]


@pytest.mark.slow
def test_quick_mode_numbers_are_consistent(quick):
    r, md, _ = quick
    assert r["stages"]["backend"]["computes"] and r["device"]["backend"] == r["stages"]["backend"]["backend"]
    assert r["versions"]["jax"] and r["versions"]["numpy"]

    gtzan = r["stages"]["epoch_gtzan"]
    assert gtzan["data_build_workers"] == 2 and gtzan["data_build_fallback"] is None  # the spawned pool ran
    assert gtzan["clips"] == 40 and gtzan["batch"] == 32 and gtzan["steps_per_epoch"] == math.ceil(40 / 32)
    assert 0 < gtzan["epoch_s"] < gtzan["first_epoch_s"]  # the timed epoch is the second: no compilation in it
    assert gtzan["clips_per_s"] == pytest.approx(40 / gtzan["epoch_s"]) and 0.0 <= gtzan["test_accuracy"] <= 1.0

    fp32 = r["stages"]["train_fp32"]
    (entry,) = fp32["runs"]
    jax_row, torch_row = entry["rows"]  # torch ran beside JAX, in its own process
    assert entry["precision"] == "fp32" and entry["batch"] == 4 and entry["flops_per_clip"] > 0
    assert jax_row["impl"] == "jax" and jax_row["compile_s"] > 0
    assert jax_row["clips_per_s"] == pytest.approx(4 / jax_row["median_s"])
    if HAVE_TORCH:
        assert torch_row["impl"] == "torch (eager)" and torch_row["median_s"] > 0
        assert entry["jax_speedup"] == pytest.approx(torch_row["median_s"] / jax_row["median_s"])
    else:
        assert "No module named 'torch'" in torch_row["error"]

    d = r["stages"]["train_default"]
    assert d["steps"] == 2 * gtzan["steps_per_epoch"] and d["wall_s"] > d["train_seconds"] > 0

    prof = r["stages"]["profile"]
    ms = [row["ms"] for row in prof["top"]]
    assert ms == sorted(ms, reverse=True) and 0 < sum(ms) <= prof["op_total_ms"] + 1e-6

    m = r["stages"]["mel"]
    assert m["clips"] == 4 and m["clips_per_s"] == pytest.approx(m["clips"] / m["seconds"])
    assert m["bytes_per_s"] >= m["min_bytes_per_s"] > 0  # XLA moves at least the floor it is compared with

    t = r["stages"]["tests"]  # the sanity file, not a nested pytest of the suite
    assert t["sanity_only"] and t["counts"] == {"passed": 2, "skipped": 1} and "no GPU" in t["skip_reasons"][0]
    assert "-W default" in t["command"]

    for heading in ("## mel", "## one epoch", "## bench train, fp32", "## bench train, bf16", "## profile",
                    "`python -m crnn_jax.train`"):
        assert heading in md, heading


@pytest.mark.slow
def test_an_exhausted_budget_skips_every_stage_and_still_writes(tmp_path):
    r, md, p = run_script(tmp_path, "--quick", "--budget-s", "0", timeout=120)
    assert p.returncode == 0 and tuple(r["stages"]) == run_py.STAGES
    assert all("budget" in s["skipped"] for s in r["stages"].values())
    assert md.count("skipped") == len(run_py.STAGES)


@pytest.mark.slow
def test_a_full_run_without_a_gpu_stops_at_the_backend_check(tmp_path):
    import jax

    if jax.default_backend() == "gpu":
        pytest.skip("this machine has a GPU: the check passes here")
    r, _, p = run_script(tmp_path, "--stages", "mel", "--budget-s", "300", timeout=120)
    assert p.returncode == 3, p.stdout[-2000:]
    assert "not 'gpu'" in r["stages"]["backend"]["error"] and r["status"] == "aborted"
    assert "backend check failed" in r["stages"]["mel"]["skipped"] and "mel" not in r.get("failed", {})
