"""The stages of experiments/gpu/run.py: each takes the stage's context (run.StageContext: sizes, temp dir,
time left, partial saves) and returns its numbers with "ok". Imported by run.py inside the backend stage's
guard, after the environment (compilation caches, GPU memory policy) is set: importing this starts JAX.
crnn_jax's heavier modules (flax, optax, orbax behind them) are imported by the stages that use them, so an
import that breaks on a new JAX costs those stages, not the run."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from crnn_jax.benchmarks.common import device_info, peak_flops

import gpu_report as report_lib
import synth_pool
import torch_worker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Sizes per mode. point_jax / point_torch: seconds one grid point needs (first compile included) before it
# starts, with and without torch.compile; a point whose time is not left is skipped, saying so.
FULL = dict(tests=["tests/test_gpu.py", "tests/test_ops.py", "tests/test_model.py"], mel_clips=1000, mel_chunk=100,
            mel_seconds=30.0, gtzan_crop=None, grid=[(3.0, 32), (30.0, 32), (3.0, 256), (3.0, 4), (30.0, 4), (30.0, 256)],
            repeats=10, model={}, clips_per_class=100, clip_seconds=30.0, recipe_crop=None, profile=(3.0, 32),
            default_args=[], point_jax=20, point_torch=45, pool_workers=None, pool_min_audio_s=600)
# quick: toy shapes that run every code path on a CPU in seconds, the spawned data build included
QUICK = dict(tests=None, mel_clips=4, mel_chunk=2, mel_seconds=1.0, gtzan_crop=1.0, grid=[(1.0, 4)], repeats=1,
             model=dict(conv_channels=(4, 8), freq_pools=(4, 4), gru_units=(6,)), clips_per_class=5, clip_seconds=2.0,
             recipe_crop=1.0, profile=(1.0, 4), default_args=None, point_jax=1,
             point_torch=1, pool_workers=2, pool_min_audio_s=0)

# The quick mode's tests stage: pytest of this file, not of the suite (a CPU test must not nest the suite).
# It checks the stage's own machinery: the -W default flag, the outcome and skip-reason parsing.
SANITY_TESTS = '''import warnings
import pytest

def test_passes():
    assert sum(range(4)) == 6

def test_a_new_deprecation_warning_is_reported_not_raised():
    warnings.warn("stands in for a warning a newer JAX or numpy emits", DeprecationWarning)

@pytest.mark.skip(reason="no GPU visible to JAX (the skip a CPU fallback would cause)")
def test_skipped():
    pass
'''


def stage_backend(ctx):
    """JAX's backend, devices and one computation on them; outside --quick, anything but "gpu" fails the run
    (JAX falls back to the CPU with only a warning when CUDA does not start)."""
    devices = jax.devices()
    ctx.log(f"  jax.devices(): {devices}")
    ctx.log("  versions: " + ", ".join(f"{k} {v}" for k, v in ctx.results["versions"].items() if v))
    value = float(jax.jit(lambda x: (x * 2.0).sum())(jnp.arange(8.0)))
    dev = device_info()
    ctx.results["device"] = dev
    stats = devices[0].memory_stats() or {}
    r = {"backend": dev["backend"], "devices": [str(d) for d in devices], "device_kind": dev["device_kind"],
         "memory_limit_bytes": stats.get("bytes_limit"), "computes": value == 56.0}
    if not r["computes"]:
        raise RuntimeError(f"2 * sum(0..7) came back as {value}, not 56")
    if not ctx.quick and dev["backend"] != "gpu":
        raise RuntimeError(f"JAX's backend is {dev['backend']!r}, not 'gpu': CUDA did not start (JAX's warning is "
                           "in run.log); stopping so that no CPU number passes for a GPU one")
    return {**r, "ok": True}


def stage_tests(ctx):
    files, cwd = ctx.size["tests"], ROOT
    if files is None:  # quick: the sanity file, in a folder of its own (no conftest, no pyproject)
        cwd = os.path.join(ctx.tmp, "sanity")
        os.makedirs(cwd, exist_ok=True)
        with open(os.path.join(cwd, "test_sanity.py"), "w") as f:
            f.write(SANITY_TESTS)
        with open(os.path.join(cwd, "pytest.ini"), "w") as f:
            f.write("[pytest]\nfilterwarnings = error\n")  # as pyproject's: -W default must win over it
        files = ["test_sanity.py"]
    # -W default: a warning new in JAX 0.11 / numpy / Python 3.12 is reported, not turned into a failure
    cmd = [sys.executable, "-m", "pytest", "-v", "-rs", "-W", "default", "-p", "no:cacheprovider", *files]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    timeout = max(5.0, ctx.left() - 5)
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        text, code = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:  # keep what finished: -v printed each outcome as it came
        text, code = "".join(x.decode() if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr)), None
    r = report_lib.judge_pytest(text, code, ctx.results["device"]["backend"])
    return {"command": " ".join(cmd[2:]), "sanity_only": ctx.size["tests"] is None, "returncode": code,
            "timeout_s": timeout, **r}


def stage_mel(ctx):
    from crnn_jax import mel
    from crnn_jax.benchmarks import mel_speed as bench_mel

    s = ctx.size
    r = bench_mel.thousand_clips(mel.MelConfig(), s["mel_seconds"], total=s["mel_clips"], chunk=s["mel_chunk"])
    return {**r, "ok": r["seconds"] > 0}


def _epoch_config(size, preset: str, cache: str, workdir: str, crop: float | None):
    from crnn_jax import config as config_lib
    from crnn_jax.data import dataset as data_lib
    from crnn_jax.data import synth

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


def _build(ctx, clips_per_class, seconds):
    s = ctx.size
    return synth_pool.prebuild_synthetic(clips_per_class, seconds, cache=os.path.join(ctx.tmp, "cache"),
                                         workers=s["pool_workers"], min_audio_s=s["pool_min_audio_s"])


def stage_epoch(ctx, *, preset, crop):
    """One epoch through train.train, timed as the second of two (the first compiles), from the loop's own
    log lines (which follow a device_get), with the data set resident on the device, one call per epoch."""
    from crnn_jax.training import loop as train_lib  # train(); crnn_jax.train.train before the reorganisation

    size = ctx.size
    build = _build(ctx, size["clips_per_class"], size["clip_seconds"])
    ctx.save(data_build_s=build["seconds"], data_build_workers=build["workers"], data_build_fallback=build.get("fallback"))
    cfg, n_train, spe = _epoch_config(size, preset, os.path.join(ctx.tmp, "cache"), os.path.join(ctx.tmp, f"run-{preset}"),
                                      crop)
    stamps = []  # (seconds since train() began, message)
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # no tty: train logs a line per flush instead of a bar
        results = train_lib.train(cfg, log=lambda m: stamps.append((time.perf_counter() - t0, str(m))))
    wall = time.perf_counter() - t0
    at = {int(m.group(1)): t for t, msg in stamps if (m := re.match(r"step (\d+)/", msg))}
    if spe not in at or 2 * spe not in at:
        raise RuntimeError(f"no log line at steps {spe} and {2 * spe}: {[m for _, m in stamps][-4:]}")
    epoch_s = at[2 * spe] - at[spe]
    return {"preset": preset, "clips": n_train, "clip_seconds": size["clip_seconds"], "crop_s": cfg.crop_seconds,
            "batch": cfg.batch_size, "steps_per_epoch": spe, "model": list(cfg.conv_channels),
            "precision": cfg.precision, **ctx.partial, "epoch_s": epoch_s, "first_epoch_s": at[spe],
            "clips_per_s": n_train / epoch_s, "train_wall_s": wall, "test_accuracy": results.get("test_accuracy"),
            "ok": epoch_s > 0}


def stage_profile(ctx):
    from crnn_jax.benchmarks import train_step as bench_train

    crop, batch = ctx.size["profile"]
    cfg = bench_train.base_config().replace(crop_seconds=crop, batch_size=batch, **ctx.size["model"])
    run, _ = bench_train.jax_runner(cfg, bench_train.train_inputs(cfg, batch))
    run(), run()
    trace_dir = os.path.join(ctx.tmp, "trace")
    n_steps = 3
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        step_s = [run() for _ in range(n_steps)]
    summary = report_lib.summarise_trace(trace_dir, top=15)
    return {"crop_s": crop, "batch": batch, "steps": n_steps, "median_step_s": float(np.median(step_s)), **summary,
            "ok": bool(summary["top"])}


def stage_grid(ctx, *, precision):
    """bench train's points in order of value: JAX in this process; torch (torch.compile on a GPU) in the
    torch worker on the same weights and inputs, where the time left allows both. A point that fails in JAX
    (e.g. out of memory at batch 256 x 30 s) is recorded in failed_points and the next one runs."""
    from crnn_jax.benchmarks import train_step as bench_train

    s, worker = ctx.size, ctx.shared.get("torch")
    dev = ctx.results["device"]
    peak = peak_flops(dev["device_kind"], precision)
    inject = {"torch-fail": "fail", "torch-crash": "crash"}
    inject = next((v for k, v in inject.items() if precision in ctx.inject.get(k, ())), None)
    base = bench_train.base_config(precision=precision).replace(**s["model"])
    entries, skipped, failed = [], [], []
    for crop, batch in s["grid"]:
        left = ctx.left()
        if left < s["point_jax"]:
            skipped.append({"crop_s": crop, "batch": batch, "reason": f"{left:.0f} s of the stage left, "
                                                                      f"{s['point_jax']} s needed"})
            continue
        ctx.log(f"  train {precision} crop {crop:g} s batch {batch}")
        cfg = base.replace(crop_seconds=crop, batch_size=batch)
        try:
            entry, variables, _ = bench_train.measure_jax(cfg, repeats=s["repeats"], peak=peak)
        except Exception as e:
            failed.append({"crop_s": crop, "batch": batch, "error": f"{type(e).__name__}: {e}"[:1000]})
            ctx.log(f"  jax failed: {failed[-1]['error'][:300]}")
            ctx.save(failed_points=failed)
            continue
        entries.append(entry)
        ctx.save(runs=entries, skipped_points=skipped)  # kept if the stage dies at a later point
        left = ctx.left()  # torch at this point only if its compile still fits in the stage
        torch_why = (worker.unavailable() if worker else "torch worker not started") or (
            None if left >= s["point_torch"] else f"{left:.0f} s of the stage left, {s['point_torch']} s needed")
        if torch_why is None:
            path = torch_worker.save_variables(variables, os.path.join(ctx.tmp, "torch-variables.pkl"))
            request = {"cfg": {"precision": precision, "crop_seconds": crop, "batch_size": batch, **s["model"]},
                       "variables": path, "repeats": s["repeats"], "threads": os.cpu_count(), "inject": inject}
            timing = worker.call(request, timeout=max(1.0, ctx.left() - 3))
            bench_train.add_torch_row(entry, timing, peak)
            ctx.log(f"  torch failed: {timing['error'][:300]}" if "error" in timing else
                    f"  torch: {timing['impl']}, {np.median(timing['times']):.4f} s a step")
        else:
            entry["torch_skipped"] = torch_why
            ctx.log(f"  torch not run: {torch_why}")
        ctx.save(runs=entries, skipped_points=skipped)
    torch_rows = [r for e in entries for r in e["rows"][1:]]
    r = {"precision": precision, "peak_flops": peak, "runs": entries, "skipped_points": skipped,
         "failed_points": failed, "torch_failures": sum("error" in r for r in torch_rows),
         "torch_worker": worker and worker.hello, "ok": bool(entries)}
    if not entries:
        r["error"] = "no point measured: " + "; ".join(x.get("error") or x["reason"] for x in failed + skipped)[:1000]
    return r


def stage_train_default(ctx):
    """`python -m crnn_jax.train` with no arguments, its data made in parallel first. Quick: with epoch_gtzan's
    toy config as the preset, so that its programs come from the compilation cache (the CPU test's time)."""
    workdir, cache = os.path.join(ctx.tmp, "default"), os.path.join(ctx.tmp, "cache")
    build, args = None, ctx.size["default_args"]
    if args is None:
        cfg, _, _ = _epoch_config(ctx.size, "gtzan.py", cache, workdir, ctx.size["gtzan_crop"])
        preset = os.path.join(ctx.tmp, "quick_default.py")
        with open(preset, "w") as f:
            f.write(f"import json\nfrom crnn_jax.config import Config\n\n"
                    f"config = Config.from_dict(json.loads({cfg.to_json()!r}))\n")
        args = ["--config", preset]
    else:
        from crnn_jax import config as config_lib

        d = config_lib.default_config(jax.default_backend())
        build = _build(ctx, d.synth_clips_per_class, d.synth_seconds)
    cmd = [sys.executable, "-m", "crnn_jax.train", *args, "--workdir", workdir]
    env = {**os.environ, "CRNN_JAX_CACHE": cache}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(5.0, ctx.left() - 5))
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"exit {p.returncode}: {(p.stdout + p.stderr)[-800:]}")
    with open(os.path.join(workdir, "results.json")) as f:
        r = json.load(f)
    return {"command": " ".join(["python"] + cmd[1:-2]), "wall_s": wall, "data_build_s": build and build["seconds"],
            "train_seconds": r["train_seconds"], "steps": r["steps"], "test_accuracy": r["test_accuracy"],
            "time_to_accuracy": r.get("time_to_accuracy"), "ok": r["test_accuracy"] is not None}


def stage_deterministic(ctx):
    """The batch-32 3 s step (quick: the toy point) in two `bench train --no-torch` processes, without and with
    XLA_FLAGS=--xla_gpu_deterministic_ops=true."""
    crop, batch = ctx.size["profile"]
    model = ctx.size["model"]
    shape = [x for flag, key in (("--channels", "conv_channels"), ("--freq-pools", "freq_pools"),
                                 ("--gru-units", "gru_units")) if key in model for x in (flag, ",".join(map(str, model[key])))]
    rows = {}
    for i, (name, flags) in enumerate((("default", ""), ("deterministic", "--xla_gpu_deterministic_ops=true"))):
        path = os.path.join(ctx.tmp, f"det-{name}.json")
        cmd = [sys.executable, "-m", "crnn_jax.bench", "train", "--no-torch", "--crops", str(crop), "--batch-sizes",
               str(batch), "--repeats", str(ctx.size["repeats"]), "--json", path, *shape]
        env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()}
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=max(5.0, (ctx.left() - 5) / (2 - i)))  # the first leaves the second its half
        if p.returncode != 0:
            raise RuntimeError(f"{name}: exit {p.returncode}: {(p.stdout + p.stderr)[-800:]}")
        with open(path) as f:
            rows[name] = json.load(f)["runs"][0]["rows"][0]["median_s"]
        ctx.save(median_s=rows)
    return {"crop_s": crop, "batch": batch, "median_s": rows, "slowdown": rows["deterministic"] / rows["default"],
            "ok": True}


RUNNERS = {
    "backend": stage_backend,
    "train_fp32": lambda ctx: stage_grid(ctx, precision="fp32"),
    "train_bf16": lambda ctx: stage_grid(ctx, precision="bf16"),
    "epoch_gtzan": lambda ctx: stage_epoch(ctx, preset="gtzan.py", crop=ctx.size["gtzan_crop"]),
    "mel": stage_mel,
    "epoch_recipe": lambda ctx: stage_epoch(ctx, preset="seed_report.py", crop=ctx.size["recipe_crop"]),
    "profile": stage_profile,
    "train_default": stage_train_default,
    "deterministic": stage_deterministic,
    "tests": stage_tests,
}
