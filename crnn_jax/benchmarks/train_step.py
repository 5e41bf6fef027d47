"""`python -m crnn_jax.bench train`: the training call train.py makes
(steps.parallel(make_multi_step(make_train_step))) beside the PyTorch twin (crnn_jax.benchmarks.torch_reference),
same shapes, weights and inputs, over a grid of batch sizes and crop lengths. `measure` times one grid point
with torch in this process; the GPU script (experiments/gpu/run.py) times JAX with `measure_jax` and torch in
a process of its own, and joins the two with `add_torch_row`."""

import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from crnn_jax import config as config_lib
from crnn_jax import model
from crnn_jax.training import steps
from crnn_jax.benchmarks.common import device_info, peak_flops, sine_audio, versions

N_CLASSES = 10


def torch_reference():
    """The PyTorch twin (crnn_jax.benchmarks.torch_reference), or why not: torch is the optional [torch] extra."""
    try:
        from crnn_jax.benchmarks import torch_reference as module
    except ImportError:
        return None, "torch is not installed (pip install 'crnn_jax[torch]'): timing jax only"
    return module, None


def train_inputs(cfg, batch, seed=0):
    """Host arrays of one global batch: crops int16 [batch, crop], gains float32 [batch], labels int32 [batch]."""
    rng = np.random.default_rng(seed)
    crops = np.round(sine_audio(batch, cfg.crop_samples, cfg.sample_rate, seed) * 32767).astype(np.int16)
    gains = (10.0 ** (rng.uniform(-cfg.gain_db, cfg.gain_db, batch) / 20.0)).astype(np.float32)
    return crops, gains, rng.integers(0, N_CLASSES, batch).astype(np.int32)


def jax_runner(cfg, inputs, steps_per_call=1):
    """The training call train.py makes (steps.parallel(make_multi_step(make_train_step)), crops from the
    host) compiled for one batch shape -> (run() -> seconds per step, info dict). run() takes
    `steps_per_call` training steps (on the same batch) in one call from the current state (threaded
    through), waits for them, and returns the time per step; info's FLOPs and bytes are per step."""
    n_dev = jax.device_count()
    if cfg.batch_size % n_dev:
        raise ValueError(f"--batch-sizes: {cfg.batch_size} is not divisible by the {n_dev} devices")
    net = model.build_model(cfg, N_CLASSES, axis_name=steps.AXIS)
    tx = steps.make_optimizer(cfg, 1000)
    state = steps.place_state(steps.create_state(net, tx, cfg.crop_samples, cfg.seed))
    params0 = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    k = steps_per_call
    per_call = lambda v: np.repeat(steps.shard(v, n_dev)[:, None], k, axis=1)  # [devices, k, per_device, ...]
    batch = jax.device_put({name: per_call(v) for name, v in zip(("crops", "gains", "labels"), inputs)})
    audio = steps.place_state(jnp.zeros((1, 1), jnp.int16))  # the resident data set: unused with host crops
    p_train = steps.parallel(steps.make_multi_step(steps.make_train_step(net, tx, head=cfg.head, seed=cfg.seed),
                                                   cfg.crop_samples), n_broadcast=2, state_out=True)
    start = time.perf_counter()
    compiled = p_train.lower(state, audio, batch).compile()
    compile_s = time.perf_counter() - start
    # XLA's cost analysis counts a while loop's body once, so the K-step scan costs what one step does;
    # count one step's program. (The GRU's recurrence is such a loop too: one time step of it is
    # counted, under 0.1 % of a step's FLOPs at these sizes.)
    one_step = compiled if k == 1 else p_train.lower(state, audio, jax.tree.map(lambda x: x[:, :1], batch)).compile()
    cost = one_step.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # one device's program: times n_dev
    mem = compiled.memory_analysis()
    info = {"compile_s": compile_s, "variables": params0,
            "flops": float(cost.get("flops", float("nan"))) * n_dev,
            "bytes": float(cost.get("bytes accessed", float("nan"))) * n_dev,
            "xla_bytes": mem and n_dev * int(mem.argument_size_in_bytes + mem.output_size_in_bytes
                                             + mem.temp_size_in_bytes)}
    box = [state]

    def run():
        t = time.perf_counter()
        box[0], metrics = compiled(box[0], audio, batch)
        jax.block_until_ready((box[0], metrics))
        return (time.perf_counter() - t) / k

    return run, info


def _row(impl, times, batch, flops, peak):
    """Seconds per step -> {"impl", "median_s", "min_s", "clips_per_s", "tflops", "peak_fraction"}."""
    med = float(np.median(times))
    return {"impl": impl, "median_s": med, "min_s": float(min(times)), "clips_per_s": batch / med,
            "tflops": flops / med / 1e12, "peak_fraction": None if peak is None else flops / med / peak}


def _entry(cfg, jinfo, jax_times, peak):
    """One grid entry with its jax row (see measure)."""
    batch = cfg.batch_size
    row = _row("jax", jax_times, batch, jinfo["flops"], peak)
    row.update(compile_s=jinfo["compile_s"], xla_bytes=jinfo["xla_bytes"],
               peak_bytes=(jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use"))
    return {"crop_s": cfg.crop_seconds, "batch": batch, "precision": cfg.precision,
            "flops_per_step": jinfo["flops"], "bytes_per_step": jinfo["bytes"], "flops_per_clip": jinfo["flops"] / batch,
            "bytes_per_clip": jinfo["bytes"] / batch, "rows": [row]}


def add_torch_row(entry, timing, peak=None):
    """Append torch's row to a grid entry from torch_reference.time_training_step's dict, or from {"error": why}
    (the row then says why and the entry has no jax_speedup) -> entry."""
    if "error" in timing:
        entry["rows"].append({"impl": "torch", "error": str(timing["error"])})
        return entry
    row = _row(timing["impl"], timing["times"], entry["batch"], entry["flops_per_step"], peak)
    row.update(compile_s=timing["first_s"], peak_bytes=timing.get("peak_bytes"), threads=timing.get("threads"),
               compile_error=timing.get("compile_error"))
    entry["rows"].append(row)
    entry["jax_speedup"] = row["median_s"] / entry["rows"][0]["median_s"]
    return entry


def measure_jax(cfg, *, repeats, steps_per_call=1, peak=None):
    """Time JAX alone at cfg's shape: compile, two warm-up calls, `repeats` timed calls -> (grid entry with
    the jax row, the initial flax variables, the host inputs): torch can then be timed elsewhere on the same
    weights and inputs."""
    inputs = train_inputs(cfg, cfg.batch_size)
    run, jinfo = jax_runner(cfg, inputs, steps_per_call)
    run(), run()
    return _entry(cfg, jinfo, [run() for _ in range(repeats)], peak), jinfo["variables"], inputs


def measure(cfg, ref=None, *, on_gpu, repeats, steps_per_call=1, torch_threads=None, peak=None):
    """Time cfg's training step (batch cfg.batch_size, crop cfg.crop_seconds) in JAX and, if `ref` (the
    torch_reference module) is given, in PyTorch on the same weights and inputs, interleaved -> one grid
    entry: {"crop_s", "batch", "flops_per_step", "bytes_per_step", "flops_per_clip", "bytes_per_clip",
    "rows": [{"impl", "median_s", "min_s", "clips_per_s", "tflops", "peak_fraction", "compile_s",
    "peak_bytes", ...}], "jax_speedup"?}. Times are seconds per step; peak: the device's FLOP/s or None.
    peak_bytes (jax): the device's peak bytes in use so far in this process (GPU; None on CPU).
    A torch error (torch.compile, CUDA out of memory) costs only torch's row: {"impl": "torch", "error"}."""
    batch = cfg.batch_size
    inputs = train_inputs(cfg, batch)
    jax_run, jinfo = jax_runner(cfg, inputs, steps_per_call)
    runs, torch_error = {"jax": jax_run}, None
    if ref is not None:
        try:
            runs["torch"] = ref.make_runner(cfg, N_CLASSES, jinfo["variables"], inputs, gpu=on_gpu,
                                            threads=torch_threads or os.cpu_count())
            torch_first_s = runs["torch"]()  # torch.compile compiles here on a GPU
        except Exception as e:
            runs.pop("torch", None)
            torch_error = f"{type(e).__name__}: {e}"[:1000]
    times = {name: [] for name in runs}
    for i in range(repeats + 2):  # two warm-up rounds, then interleaved: load from elsewhere hits both alike
        for name in list(runs):
            try:
                t = runs[name]()
            except Exception as e:
                if name == "jax":
                    raise
                del runs[name], times[name]
                torch_error = f"{type(e).__name__}: {e}"[:1000]
                continue
            if i >= 2:
                times[name].append(t)
    entry = _entry(cfg, jinfo, times["jax"], peak)
    if "torch" in times:
        add_torch_row(entry, {"impl": "torch (compile)" if on_gpu else "torch (eager)", "times": times["torch"],
                              "first_s": torch_first_s, "peak_bytes": ref.peak_cuda_bytes() if on_gpu else None,
                              "threads": ref.torch.get_num_threads()}, peak)
    elif torch_error:
        add_torch_row(entry, {"error": torch_error})
    return entry


def base_config(preset="choi", model_name="crnn", precision="fp32", channels=None, freq_pools=None, gru_units=None):
    """The Config bench train starts from: Config() (choi) or default_config("cpu") (cpu), then the flags."""
    base = config_lib.default_config("cpu") if preset == "cpu" else config_lib.Config()
    shape = {k: tuple(v) for k, v in (("conv_channels", channels), ("freq_pools", freq_pools),
                                      ("gru_units", gru_units)) if v}
    return base.replace(model=model_name, precision=precision, **shape)


def bench_train(args):
    """Per-step time of the pmapped training step vs the PyTorch twin over a grid of batch sizes and crop
    lengths; prints one table, optionally writes JSON."""
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if args.steps_per_call < 1:
        raise ValueError(f"--steps-per-call must be >= 1, got {args.steps_per_call}")
    # On a GPU, JAX would otherwise take 75 % of the memory up front and leave torch the rest.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    device = device_info()
    on_gpu = device["backend"] == "gpu"
    base = base_config(args.preset, args.model, args.precision, args.channels, args.freq_pools, args.gru_units)
    batch_sizes = args.batch_sizes or ([4, 32, 256] if on_gpu else [4, 32])
    crops = args.crops or ([3.0, 30.0] if on_gpu else [3.0])
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(device["device_kind"], args.precision)
    ref, why_not = (None, "--no-torch: timing jax only") if args.no_torch else torch_reference()
    result = {"command": " ".join(["python -m crnn_jax.bench"] + sys.argv[1:]),
              "date": datetime.datetime.now().isoformat(timespec="seconds"), "device": device,
              "versions": train_versions(ref), "python": platform.python_version(), "peak_flops": peak,
              "cpus": os.cpu_count(),
              "config": {k: getattr(base, k) for k in ("model", "conv_channels", "gru_units", "precision")},
              "steps_per_call": args.steps_per_call,
              "torch_skipped": why_not, "load_avg_before": os.getloadavg(), "runs": []}
    if why_not:
        print(why_not)
    for crop in crops:
        for batch in batch_sizes:
            result["runs"].append(measure(base.replace(crop_seconds=crop, batch_size=batch), ref, on_gpu=on_gpu,
                                          repeats=args.repeats, steps_per_call=args.steps_per_call,
                                          torch_threads=args.torch_threads, peak=peak))
    result["load_avg_after"] = os.getloadavg()
    print_table(result, args.repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return result


def train_versions(ref=None):
    """Versions that matter to the training benchmark (torch's if `ref` was loaded)."""
    return {**versions(), "flax": importlib.metadata.version("flax"), "torch": ref and ref.torch.__version__}


def print_table(result, repeats):
    d, c = result["device"], result["config"]
    print(f"training step ({c['model']} {'/'.join(map(str, c['conv_channels']))}, {c['precision']}), "
          f"{d['backend']} ({d['device_kind']}, {d['n_devices']} device(s)); median of {repeats}, interleaved; "
          f"1-min load {result['load_avg_before'][0]:.2f} -> {result['load_avg_after'][0]:.2f}")
    print(f"{'crop':>5} {'batch':>5} {'impl':<16} {'median s':>9} {'min s':>8} {'clips/s':>8} {'TFLOP/s':>8} "
          f"{'of peak':>8} {'memory':>9} {'compile s':>9}")
    for e in result["runs"]:
        for r in e["rows"]:
            if "error" in r:
                print(f"{e['crop_s']:5g} {e['batch']:5d} {r['impl']:<16} failed: {r['error'][:200]}")
                continue
            frac = "unknown" if r["peak_fraction"] is None else f"{r['peak_fraction']:.1%}"
            mem = r.get("peak_bytes") or r.get("xla_bytes")
            mem = "n/a" if mem is None else f"{mem / 2**20:.0f} MiB"
            print(f"{e['crop_s']:5g} {e['batch']:5d} {r['impl']:<16} {r['median_s']:9.4f} {r['min_s']:8.4f} "
                  f"{r['clips_per_s']:8.1f} {r['tflops']:8.4f} {frac:>8} {mem:>9} {r['compile_s']:9.2f}")
        speed = f"; jax is {e['jax_speedup']:.2f}x torch" if "jax_speedup" in e else ""
        print(f"{'':12}XLA cost per clip: {e['flops_per_clip'] / 1e9:.3f} GFLOP, "
              f"{e['bytes_per_clip'] / 1e6:.1f} MB{speed}")
    print("memory: device peak where reported (GPU), else XLA's arguments + outputs + temporaries (jax on CPU)")


def add_args(parser):
    ints, floats = (lambda s: [int(v) for v in s.split(",")]), (lambda s: [float(v) for v in s.split(",")])
    parser.add_argument("--batch-sizes", type=ints, help="global batch sizes (GPU default 4,32,256; CPU 4,32)")
    parser.add_argument("--crops", type=floats, help="crop lengths, s (GPU default 3,30; CPU 3)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per implementation after warm-up")
    parser.add_argument("--preset", choices=("choi", "cpu"), default="choi",
                        help="choi: Config(), 64/128/128/128; cpu: config.default_config('cpu'), 32/64/64/64")
    parser.add_argument("--model", choices=("crnn", "cnn"), default="crnn")
    parser.add_argument("--channels", type=ints, help="conv channels, e.g. 64,128,128,128 (overrides --preset)")
    parser.add_argument("--freq-pools", type=ints, help="frequency pools, one per conv block (default 2,3,4,4)")
    parser.add_argument("--gru-units", type=ints, help="GRU layer sizes (default 32,32)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--steps-per-call", type=int, default=1,
                        help="JAX training steps per device call (lax.scan), as train.py's flag; times are per step")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s, if not in the table")
    parser.add_argument("--no-torch", action="store_true", help="time jax only")
    parser.add_argument("--torch-threads", type=int, help="torch CPU threads (default: all cores, as XLA uses)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers here")
