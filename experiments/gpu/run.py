"""Issue 13's GPU measurements in one command that stops itself before its time limit.

    experiments/gpu/run.sh                      # on the lent GPU: carried wheels, then this with --out $OUT
    python experiments/gpu/run.py --quick --out /tmp/q   # the same stages on a CPU at toy sizes (~1 min; a test)

Stages, in this order (each checks the time left first and is skipped, with the reason, when too little is):
  tests          pytest of tests/test_gpu.py (GPU vs CPU forward/gradients), test_ops.py, test_model.py
  mel            1,000 clips x 30 s through the jitted log-mel: s, clips/s, GB/s against peak bandwidth
  epoch_gtzan    one epoch of 800 clips x 30 s at batch 32 (experiments/gtzan.py: 3 s crops) through train.train
  epoch_recipe   one epoch of the report's recipe (experiments/seed_report.py: batch 4, 29 s crops, Algorithm 8.6)
  profile        jax.profiler trace of the training step (batch 32, 3 s), top operations by device time
  train_fp32     bench train grid, batch 4/32/256 x 3 s/30 s, beside PyTorch with torch.compile
  train_default  `python -m crnn_jax.train` with no arguments: wall time, time to 90 %, test accuracy
  train_bf16     the grid again in bf16
  deterministic  the batch-32 3 s step with XLA_FLAGS=--xla_gpu_deterministic_ops=true (bit-identical resume)
Epochs are timed as the second of two epochs (the first compiles), from the train loop's own log lines,
which follow a device_get of the metrics, with the data set resident on the device and one call per epoch.
Writes OUT/gpu_results.json (everything) and OUT/gpu_results.md (tables) after every stage.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [ROOT, HERE]  # the checkout's crnn_jax, and gpu_report beside this file
# Before JAX starts: take GPU memory as needed (torch runs in the same process; peaks stay meaningful).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from crnn_jax import config as config_lib, mel  # noqa: E402
from crnn_jax.benchmarks import mel_speed as bench_mel
from crnn_jax.benchmarks import train_step as bench_train
from crnn_jax.data import dataset as data_lib
from crnn_jax.data import synth
from crnn_jax import train as train_lib  # noqa: E402
from crnn_jax.benchmarks.common import device_info, peak_flops  # noqa: E402
import gpu_report as report_lib  # noqa: E402

STAGES = ("tests", "mel", "epoch_gtzan", "epoch_recipe", "profile", "train_fp32", "train_default", "train_bf16",
          "deterministic")

# Sizes per mode. quick: toy shapes that exercise every code path on a CPU in about a minute.
FULL = dict(tests=["tests/test_gpu.py", "tests/test_ops.py", "tests/test_model.py"], mel_clips=1000, mel_chunk=100,
            mel_seconds=30.0, gtzan_crop=None, grid=[(3.0, 32), (30.0, 32), (3.0, 256), (3.0, 4), (30.0, 4), (30.0, 256)],
            repeats=10, model={}, clips_per_class=100, clip_seconds=30.0, recipe_crop=None, profile=(3.0, 32),
            default_args=[], need=dict(tests=60, mel=15, epoch=45, profile=25, point=30, train_default=120,
                                       deterministic=45))
QUICK = dict(tests=["tests/test_gpu.py"], mel_clips=4, mel_chunk=2, mel_seconds=1.0, gtzan_crop=1.0, grid=[(1.0, 4)], repeats=1,
             model=dict(conv_channels=(4, 8), freq_pools=(4, 4), gru_units=(6,)), clips_per_class=5, clip_seconds=2.0,
             recipe_crop=1.0, profile=(1.0, 4), default_args=["--config", "experiments/smoke.py"],
             need=dict(tests=5, mel=2, epoch=5, profile=3, point=3, train_default=10, deterministic=10))


class Budget:
    """Seconds left of --budget-s, counted from the start of the script."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished children (wall time lies on a busy machine)."""
    import resource

    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def log(msg: str) -> None:
    print(f"[{datetime.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


# --- data --------------------------------------------------------------------------------------------------

def _clip(args):
    label, index, seconds, sample_rate, seed = args
    return synth.generate_clip(label, seconds=seconds, sample_rate=sample_rate, seed=seed, index=index)


def prebuild_synthetic(clips_per_class: int, seconds: float, *, cache: str, sample_rate: int = 22050,
                       seed: int = 0, workers: int | None = None) -> float:
    """Fill data.synthetic's cache for these settings with clips made on `workers` processes (synth.generate
    is single-threaded: 1,000 x 30 s clips take minutes) -> seconds taken. The clips are the same pure
    functions of (seed, label, index) that synth.generate computes, in its class-major order, and
    data.synthetic stores them under its own key, so train.train then finds them cached."""
    import concurrent.futures
    import multiprocessing

    start = time.perf_counter()
    if clips_per_class * len(synth.CLASS_NAMES) * seconds < 600:  # a minute of audio: not worth the workers
        data_lib.synthetic(clips_per_class=clips_per_class, seconds=seconds, sample_rate=sample_rate, seed=seed,
                           cache=cache)
        return time.perf_counter() - start
    original = synth.generate

    def parallel_generate(n_per_class, *, seconds, sample_rate=22050, seed=0):
        labels = np.repeat(np.arange(len(synth.CLASS_NAMES), dtype=np.int32), n_per_class)
        jobs = [(int(l), r % n_per_class, seconds, sample_rate, seed) for r, l in enumerate(labels)]
        # spawn, not fork: this process already runs JAX's threads
        with concurrent.futures.ProcessPoolExecutor(workers or os.cpu_count(),
                                                    mp_context=multiprocessing.get_context("spawn")) as pool:
            return np.stack(list(pool.map(_clip, jobs, chunksize=8))), labels

    synth.generate = parallel_generate
    try:
        data_lib.synthetic(clips_per_class=clips_per_class, seconds=seconds, sample_rate=sample_rate, seed=seed,
                           cache=cache)
    finally:
        synth.generate = original
    return time.perf_counter() - start


# --- stages ------------------------------------------------------------------------------------------------

def stage_tests(size, budget, out):
    timeout = max(10, min(budget.left() - 30, 240))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *size["tests"]]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    tail = (p.stdout + p.stderr).strip().splitlines()
    summary = next((l for l in reversed(tail) if re.search(r"\d+ (passed|failed|skipped|error)", l)), tail[-1:])
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", str(summary))}
    return {"command": " ".join(cmd[2:]), "returncode": p.returncode, "summary": str(summary).strip("= "),
            "counts": counts, "skip_reasons": [l for l in tail if l.startswith("SKIPPED")][:5],
            "ok": p.returncode == 0}


def stage_mel(size, budget, out):
    r = bench_mel.thousand_clips(mel.MelConfig(), size["mel_seconds"], total=size["mel_clips"], chunk=size["mel_chunk"])
    return {**r, "ok": r["seconds"] > 0}


def _epoch_config(size, preset: str, cache: str, workdir: str, crop: float | None):
    cfg = config_lib.load_preset(os.path.join(ROOT, "experiments", preset))
    cfg = cfg.replace(data="synthetic", split="random", synth_clips_per_class=size["clips_per_class"],
                      synth_seconds=size["clip_seconds"], test_fraction=0.2, valid_fraction=0.0, seed=0,
                      cache_dir=cache, workdir=workdir, data_placement="device", **size["model"],
                      **({"crop_seconds": crop} if crop else {}))
    n_train = round(0.8 * size["clips_per_class"]) * len(synth.CLASS_NAMES)
    spe = data_lib.steps_per_epoch(n_train, cfg.batch_size)
    # Two epochs, one call each; logged (and synchronised) at each epoch's end, checkpointed at the end only.
    return cfg.replace(epochs=2, max_steps=None, steps_per_call=spe, log_every=spe, eval_every=spe,
                       checkpoint_every=2 * spe), n_train, spe


def stage_epoch(size, budget, out, *, preset, crop, tmp):
    cache = os.path.join(tmp, "cache")
    build_s = prebuild_synthetic(size["clips_per_class"], size["clip_seconds"], cache=cache)
    cfg, n_train, spe = _epoch_config(size, preset, cache, os.path.join(tmp, f"run-{preset}"), crop)
    stamps = []  # (seconds since train() began, message)
    t0 = time.perf_counter()
    sink = io.StringIO()
    with contextlib.redirect_stderr(sink):  # no tty: train logs a line per flush instead of drawing a bar
        results = train_lib.train(cfg, log=lambda m: stamps.append((time.perf_counter() - t0, str(m))))
    wall = time.perf_counter() - t0
    at = {int(m.group(1)): t for t, msg in stamps if (m := re.match(r"step (\d+)/", msg))}
    if spe not in at or 2 * spe not in at:
        raise RuntimeError(f"no log line at steps {spe} and {2 * spe}: {[m for _, m in stamps][-4:]}")
    epoch_s = at[2 * spe] - at[spe]
    return {"preset": preset, "clips": n_train, "clip_seconds": size["clip_seconds"], "crop_s": cfg.crop_seconds,
            "batch": cfg.batch_size, "steps_per_epoch": spe, "model": list(cfg.conv_channels),
            "precision": cfg.precision, "data_build_s": build_s, "epoch_s": epoch_s,
            "first_epoch_s": at[spe], "clips_per_s": n_train / epoch_s, "train_wall_s": wall,
            "test_accuracy": results.get("test_accuracy"), "ok": epoch_s > 0}


def stage_profile(size, budget, out, *, tmp):
    crop, batch = size["profile"]
    cfg = bench_train.base_config().replace(crop_seconds=crop, batch_size=batch, **size["model"])
    run, info = bench_train.jax_runner(cfg, bench_train.train_inputs(cfg, batch))
    run(), run()
    trace_dir = os.path.join(tmp, "trace")
    n_steps = 3
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        step_s = [run() for _ in range(n_steps)]
    summary = report_lib.summarise_trace(trace_dir, top=15)
    return {"crop_s": crop, "batch": batch, "steps": n_steps, "median_step_s": float(np.median(step_s)), **summary,
            "ok": bool(summary["top"])}


def stage_grid(size, budget, out, *, precision, results, reserve=0.0):
    dev = device_info()
    on_gpu = dev["backend"] == "gpu"
    ref, why_not = bench_train.torch_reference()
    peak = peak_flops(dev["device_kind"], precision)
    entries, skipped = [], []
    base = bench_train.base_config(precision=precision).replace(**size["model"])
    for crop, batch in size["grid"]:
        if budget.left() < size["need"]["point"] + reserve:
            skipped.append({"crop_s": crop, "batch": batch, "reason": f"{budget.left():.0f} s of budget left, "
                                                                      f"{reserve:.0f} s kept for later stages"})
            continue
        # torch.compile compiles each shape anew (tens of seconds on a GPU): only while time allows.
        with_torch = ref is not None and budget.left() > 3 * size["need"]["point"] + reserve
        log(f"  train {precision} crop {crop:g} s batch {batch}{'' if with_torch else ' (jax only)'}")
        entry = bench_train.measure(base.replace(crop_seconds=crop, batch_size=batch), ref if with_torch else None,
                                    on_gpu=on_gpu, repeats=size["repeats"], peak=peak)
        entries.append(entry)
        results["stages"][f"train_{precision}"] = {"runs": entries, "partial": True}  # kept if a later point dies
        report_lib.write(results, out)
    return {"precision": precision, "peak_flops": peak, "torch_skipped": why_not, "runs": entries,
            "skipped_points": skipped, "ok": bool(entries)}


def stage_train_default(size, budget, out, *, tmp):
    workdir = os.path.join(tmp, "default")
    cache = os.path.join(tmp, "cache")
    build_s = None
    if not size["default_args"]:  # the GPU default's data, made in parallel first (reported apart)
        d = config_lib.default_config(jax.default_backend())
        build_s = prebuild_synthetic(d.synth_clips_per_class, d.synth_seconds, cache=cache)
    cmd = [sys.executable, "-m", "crnn_jax.train", *size["default_args"], "--workdir", workdir]
    env = {**os.environ, "CRNN_JAX_CACHE": cache}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(10, budget.left() - 20))
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"exit {p.returncode}: {(p.stdout + p.stderr)[-800:]}")
    with open(os.path.join(workdir, "results.json")) as f:
        r = json.load(f)
    return {"command": " ".join(["python"] + cmd[1:-2]), "wall_s": wall, "data_build_s": build_s,
            "train_seconds": r["train_seconds"], "steps": r["steps"], "test_accuracy": r["test_accuracy"],
            "time_to_accuracy": r.get("time_to_accuracy"), "ok": r["test_accuracy"] is not None}


def stage_deterministic(size, budget, out, *, tmp):
    crop, batch = size["profile"]
    rows = {}
    for name, flags in (("default", ""), ("deterministic", "--xla_gpu_deterministic_ops=true")):
        path = os.path.join(tmp, f"det-{name}.json")
        shape = [x for flag, key in (("--channels", "conv_channels"), ("--freq-pools", "freq_pools"),
                                     ("--gru-units", "gru_units")) if key in size["model"]
                 for x in (flag, ",".join(map(str, size["model"][key])))]
        cmd = [sys.executable, "-m", "crnn_jax.bench", "train", "--no-torch", "--crops", str(crop), "--batch-sizes",
               str(batch), "--repeats", str(size["repeats"]), "--json", path, *shape]
        env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()}
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=max(10, budget.left() - 15))
        if p.returncode != 0:
            raise RuntimeError(f"{name}: exit {p.returncode}: {(p.stdout + p.stderr)[-800:]}")
        with open(path) as f:
            rows[name] = json.load(f)["runs"][0]["rows"][0]["median_s"]
    return {"crop_s": crop, "batch": batch, "median_s": rows, "slowdown": rows["deterministic"] / rows["default"],
            "ok": True}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu-out", help="folder for gpu_results.json/.md")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop starting stages after this many seconds")
    p.add_argument("--quick", action="store_true", help="toy sizes on any backend (the test of this script)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    args = p.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        print(f"run.py: error: unknown stage(s) {', '.join(bad)}; choose from {', '.join(STAGES)}", file=sys.stderr)
        return 2
    size = QUICK if args.quick else FULL
    budget = Budget(args.budget_s)
    os.makedirs(args.out, exist_ok=True)
    dev = device_info()
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "mode": "quick" if args.quick else "full", "budget_s": args.budget_s, "device": dev,
               "versions": bench_train.train_versions(bench_train.torch_reference()[0]),
               "python": platform.python_version(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
               "xla_flags": os.environ.get("XLA_FLAGS", ""), "stages": {}}
    log(f"{results['mode']} run on {dev['backend']} ({dev['device_kind']}), budget {args.budget_s:.0f} s, "
        f"jax {results['versions']['jax']}")
    with tempfile.TemporaryDirectory(prefix="crnn_gpu_") as tmp:
        runners = {
            "tests": lambda: stage_tests(size, budget, args.out),
            "mel": lambda: stage_mel(size, budget, args.out),
            "epoch_gtzan": lambda: stage_epoch(size, budget, args.out, preset="gtzan.py", crop=size["gtzan_crop"], tmp=tmp),
            "epoch_recipe": lambda: stage_epoch(size, budget, args.out, preset="seed_report.py",
                                                crop=size["recipe_crop"], tmp=tmp),
            "profile": lambda: stage_profile(size, budget, args.out, tmp=tmp),
            "train_fp32": lambda: stage_grid(size, budget, args.out, precision="fp32", results=results,
                                             reserve=size["need"]["train_default"] if "train_default" in stages else 0),
            "train_default": lambda: stage_train_default(size, budget, args.out, tmp=tmp),
            "train_bf16": lambda: stage_grid(size, budget, args.out, precision="bf16", results=results,
                                             reserve=size["need"]["deterministic"] if "deterministic" in stages else 0),
            "deterministic": lambda: stage_deterministic(size, budget, args.out, tmp=tmp),
        }
        for name in STAGES:
            if name not in stages:
                continue
            need = size["need"].get(name.split("_")[0] if name.startswith("epoch") else name, size["need"]["point"])
            if budget.left() < need:
                results["stages"][name] = {"skipped": f"{budget.left():.0f} s of the budget left, {need} s needed"}
                log(f"{name}: skipped ({results['stages'][name]['skipped']})")
                continue
            log(f"{name} ({budget.left():.0f} s left)")
            t0, cpu0 = time.perf_counter(), _cpu_seconds()
            try:
                r = runners[name]()
            except Exception as e:  # record and go on: one broken stage must not cost the others' numbers
                r = {"error": f"{type(e).__name__}: {e}"[:2000], "ok": False}
            r["stage_s"], r["cpu_s"] = time.perf_counter() - t0, _cpu_seconds() - cpu0
            results["stages"][name] = r
            log(f"{name}: {'ok' if r.get('ok') else 'FAILED ' + r.get('error', '')[:300]} in {r['stage_s']:.1f} s "
                f"({r['cpu_s']:.1f} CPU s)")
            report_lib.write(results, args.out)
    results["total_s"] = args.budget_s - budget.left()
    report_lib.write(results, args.out)
    print(report_lib.markdown(results), flush=True)
    return 0 if all(s.get("ok", True) for s in results["stages"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
