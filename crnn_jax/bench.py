"""Speed measurements against peers, one subcommand each.

    python -m crnn_jax.bench mel [--batch 16] [--seconds 30] [--repeats 10] [--json FILE]
    python -m crnn_jax.bench train [--batch-sizes 4,32,256] [--crops 3,30] [--preset choi|cpu] [--json FILE]

`mel`: the jitted log-mel front end (mel.log_mel_spectrogram, default MelConfig) beside librosa doing the
same work clip by clip in the same run. `train`: the training call train.py makes
(steps.parallel(make_multi_step(make_train_step))) beside the PyTorch twin in experiments/torch_reference.py,
same shapes, weights and inputs. To add a subcommand, write `bench_<name>(args)` and register it
in `_SUBCOMMANDS` with a function that adds its options.
"""

import argparse
import dataclasses
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
from crnn_jax import mel, model, steps

# Peak DRAM/HBM bandwidth in bytes/s, matched as a substring of jax's device_kind.
_PEAK_BANDWIDTH = {
    "H100 PCIe": 2.0e12,
    "H100": 3.35e12,  # SXM, "NVIDIA H100 80GB HBM3"
    "H200": 4.8e12,
    "A100-SXM4-80GB": 2.039e12,
    "A100-SXM4-40GB": 1.555e12,
}


def _versions():
    names = ("jax", "jaxlib", "librosa", "numpy")
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _device():
    d = jax.devices()[0]
    return {"backend": jax.default_backend(), "device_kind": d.device_kind,
            "n_devices": jax.device_count(), "machine": platform.processor() or platform.machine()}


def _peak_bandwidth(device_kind):
    """Peak memory bandwidth in bytes/s for device_kind, or None when not in the table."""
    for key, value in _PEAK_BANDWIDTH.items():
        if key in device_kind:
            return value
    return None


def _test_audio(batch, n_samples, sample_rate, seed=0):
    """[batch, n_samples] float32: a few sines per clip plus noise, roughly music-like levels."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples, dtype=np.float64) / sample_rate
    freqs = rng.uniform(50.0, 5000.0, size=(batch, 4, 1))  # Hz
    tones = np.sin(2 * np.pi * freqs * t).sum(axis=1)  # [batch, n_samples]
    return (0.1 * tones + 0.01 * rng.standard_normal((batch, n_samples))).astype(np.float32)


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _librosa_log_mel(config):
    """Clip-by-clip librosa equivalent of mel.log_mel_spectrogram, or None if librosa is missing."""
    try:
        import librosa
    except ImportError:
        print("librosa is not installed: timing jax only (pip install librosa for the comparison)")
        return None

    def run(audio):  # [batch, n_samples] -> list of [n_mels, n_frames]
        out = []
        for clip in audio:
            power = librosa.feature.melspectrogram(
                y=clip, sr=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop_length,
                n_mels=config.n_mels, fmin=config.f_min, fmax=config.f_max, power=config.power,
                center=True, pad_mode="constant", htk=True, norm=None,
            )
            out.append(librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=config.top_db))
        return out

    return run


def _single_threaded_blas(fn):
    """fn run with BLAS limited to one thread (threadpoolctl, which scikit-learn brings with librosa),
    or None if threadpoolctl is missing. On a loaded machine librosa's multithreaded matmul can be
    several times slower than the single-threaded one, so the comparison is made against the faster."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None

    def run(audio):
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(audio)

    return run


def _gpu_thousand_clips(fn, config, seconds, chunk=100, total=1000):
    """Seconds to featurise `total` clips of `seconds` s on the device, `chunk` clips per call."""
    n_samples = int(round(seconds * config.sample_rate))
    audio = jax.random.normal(jax.random.key(0), (chunk, n_samples), jnp.float32) * 0.1
    fn(audio).block_until_ready()  # compile for this chunk shape
    n_calls = -(-total // chunk)
    start = time.perf_counter()
    for _ in range(n_calls):
        out = fn(audio)
    out.block_until_ready()
    return time.perf_counter() - start, n_calls * chunk


def bench_mel(args):
    """Throughput of the jitted log-mel front end beside librosa; prints a table, optionally writes JSON."""
    config = mel.MelConfig()
    n_samples = int(round(args.seconds * config.sample_rate))
    audio = _test_audio(args.batch, n_samples, config.sample_rate)
    fn = jax.jit(lambda a: mel.log_mel_spectrogram(a, config))
    device = _device()

    audio_dev = jax.device_put(audio)
    compile_s = _timed(lambda: fn(audio_dev).block_until_ready())
    lib = _librosa_log_mel(config)
    if lib is not None:
        reference = lib(audio[:1])[0].T  # warm-up, and a parity check: [n_frames, n_mels]
        max_db_err = float(np.max(np.abs(np.asarray(fn(audio_dev[:1]))[0] - reference)))

    peers = {}  # name -> clip-by-clip librosa runner
    if lib is not None:
        peers["librosa"] = lib
        lib1 = _single_threaded_blas(lib)
        if lib1 is not None:
            peers["librosa, 1-thread BLAS"] = lib1
    # Interleave all runs so that load from other processes hits each alike.
    jax_s, peer_s = [], {name: [] for name in peers}
    for _ in range(args.repeats):
        jax_s.append(_timed(lambda: fn(audio_dev).block_until_ready()))
        for name, run in peers.items():
            peer_s[name].append(_timed(lambda: run(audio)))

    # XLA's cost analysis counts a loop body once (the CPU path maps over clips), so take one clip's
    # cost and multiply by the batch.
    cost = jax.jit(lambda a: mel.log_mel_spectrogram(a, config)).lower(audio_dev[:1]).compile()
    cost = cost.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) * args.batch
    bytes_moved = float(cost.get("bytes accessed", float("nan"))) * args.batch

    jax_med = float(np.median(jax_s))
    result = {
        "command": " ".join(["python -m crnn_jax.bench"] + sys.argv[1:]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": device, "versions": _versions(), "config": dataclasses.asdict(config),
        "batch": args.batch, "seconds_per_clip": args.seconds, "repeats": args.repeats,
        "compile_s": compile_s, "load_average_1m": os.getloadavg()[0],  # other jobs skew timings
        "jax": {"median_s": jax_med, "min_s": min(jax_s), "clips_per_s": args.batch / jax_med},
        "flops_per_batch": flops, "bytes_per_batch": bytes_moved,
    }
    rows = [("jax (jit)", jax_med, min(jax_s))]
    for name, times in peer_s.items():
        med = float(np.median(times))
        result[name] = {"median_s": med, "min_s": min(times), "clips_per_s": args.batch / med}
        rows.append((name, med, min(times)))
    if peers:
        best = min(peer_s, key=lambda name: result[name]["median_s"])
        result["speedup_vs_librosa"] = result[best]["median_s"] / jax_med
        result["speedup_vs"] = best
        result["max_abs_db_diff_clip0"] = max_db_err

    print(f"log-mel of {args.batch} x {args.seconds:g} s clips at {config.sample_rate} Hz "
          f"(n_fft={config.n_fft}, hop={config.hop_length}, n_mels={config.n_mels}); "
          f"{device['backend']} ({device['device_kind']}); median of {args.repeats}; "
          f"load average {result['load_average_1m']:.1f} on {os.cpu_count()} cores")
    print(f"{'impl':<24} {'median s':>9} {'min s':>8} {'clips/s':>9} {'audio s/s':>10}")
    for name, med, low in rows:
        print(f"{name:<24} {med:9.4f} {low:8.4f} {args.batch / med:9.1f} {args.batch * args.seconds / med:10.0f}")
    if peers:
        print(f"jax / {result['speedup_vs']} (the faster librosa) throughput: {result['speedup_vs_librosa']:.2f}x"
              f"   (max |dB difference| on clip 0: {max_db_err:.2e})")
    print(f"compile {compile_s:.2f} s; XLA cost per batch: {flops / 1e9:.3f} GFLOP, {bytes_moved / 1e6:.1f} MB "
          f"-> {flops / jax_med / 1e9:.1f} GFLOP/s, {bytes_moved / jax_med / 1e9:.1f} GB/s")

    if device["backend"] == "gpu":
        total_s, n_clips = _gpu_thousand_clips(fn, config, args.seconds)
        peak = _peak_bandwidth(device["device_kind"])
        achieved = bytes_moved / args.batch * n_clips / total_s
        fraction = "unknown" if peak is None else f"{achieved / peak:.1%}"
        print(f"{n_clips} x {args.seconds:g} s clips: {total_s:.3f} s ({n_clips / total_s:.0f} clips/s); "
              f"{achieved / 1e9:.0f} GB/s = {fraction} of peak bandwidth")
        result["gpu_1000_clips"] = {"seconds": total_s, "clips": n_clips, "bytes_per_s": achieved,
                                    "peak_bytes_per_s": peak,
                                    "bandwidth_fraction": None if peak is None else achieved / peak}

    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return result


def _add_mel_args(parser):
    parser.add_argument("--batch", type=int, default=16, help="clips per call")
    parser.add_argument("--seconds", type=float, default=30.0, help="clip length, s")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls after warm-up")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers here")


# --------------------------------------------------------------------------------------------------
# train: the real pmapped training step beside the PyTorch twin (experiments/torch_reference.py)

# Dense peak FLOP/s (no sparsity), matched as a substring of device_kind, first match wins. "fp32" is TF32
# tensor-core math, JAX's default for float32 convs/matmuls on these GPUs (the torch peer is set to match).
# A CPU's device_kind is just "cpu": pass --peak-tflops (see experiments/BENCHMARKS.md).
_PEAK_FLOPS = {
    "H100 PCIe": {"fp32": 378e12, "bf16": 756e12},
    "H100": {"fp32": 494.7e12, "bf16": 989.4e12},  # SXM
    "H200": {"fp32": 494.7e12, "bf16": 989.4e12},
    "A100": {"fp32": 156e12, "bf16": 312e12},
}
_N_CLASSES = 10


def _torch_reference():
    """experiments/torch_reference.py as a module (it sits beside the package in a checkout), or a reason."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None, "torch is not installed (pip install torch): timing jax only"
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments",
                        "torch_reference.py")
    if not os.path.isfile(path):
        return None, f"{path} not found (run from a checkout): timing jax only"
    spec = importlib.util.spec_from_file_location("torch_reference", path)
    spec.loader.exec_module(module := importlib.util.module_from_spec(spec))
    return module, None


def _train_inputs(cfg, batch, seed=0):
    """Host arrays of one global batch: crops int16 [batch, crop], gains float32 [batch], labels int32 [batch]."""
    rng = np.random.default_rng(seed)
    crops = np.round(_test_audio(batch, cfg.crop_samples, cfg.sample_rate, seed) * 32767).astype(np.int16)
    gains = (10.0 ** (rng.uniform(-cfg.gain_db, cfg.gain_db, batch) / 20.0)).astype(np.float32)
    return crops, gains, rng.integers(0, _N_CLASSES, batch).astype(np.int32)


def _jax_runner(cfg, inputs, steps_per_call=1):
    """The training call train.py makes (steps.parallel(make_multi_step(make_train_step)), crops from the
    host) compiled for one batch shape -> (run() -> seconds per step, info dict). run() takes
    `steps_per_call` training steps (on the same batch) in one call from the current state (threaded
    through), waits for them, and returns the time per step; info's FLOPs and bytes are per step."""
    n_dev = jax.device_count()
    if cfg.batch_size % n_dev:
        raise ValueError(f"--batch-sizes: {cfg.batch_size} is not divisible by the {n_dev} devices")
    net = model.build_model(cfg, _N_CLASSES, axis_name=steps.AXIS)
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


def bench_train(args):
    """Per-step time of the pmapped training step vs the PyTorch twin over a grid of batch sizes and crop
    lengths; prints one table, optionally writes JSON."""
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if args.steps_per_call < 1:
        raise ValueError(f"--steps-per-call must be >= 1, got {args.steps_per_call}")
    # On a GPU, JAX would otherwise take 75 % of the memory up front and leave torch the rest.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    device = _device()
    on_gpu = device["backend"] == "gpu"
    base = config_lib.default_config("cpu") if args.preset == "cpu" else config_lib.Config()
    base = base.replace(model=args.model, precision=args.precision,
                        **({"conv_channels": tuple(args.channels)} if args.channels else {}))
    batch_sizes = args.batch_sizes or ([4, 32, 256] if on_gpu else [4, 32])
    crops = args.crops or ([3.0, 30.0] if on_gpu else [3.0])
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next(
        (p[args.precision] for key, p in _PEAK_FLOPS.items() if key in device["device_kind"]), None)
    ref, why_not = _torch_reference()
    versions = {**_versions(), "flax": importlib.metadata.version("flax"), "torch": ref and ref.torch.__version__}
    result = {"command": " ".join(["python -m crnn_jax.bench"] + sys.argv[1:]),
              "date": datetime.datetime.now().isoformat(timespec="seconds"), "device": device,
              "versions": versions, "python": platform.python_version(), "peak_flops": peak, "cpus": os.cpu_count(),
              "config": {k: getattr(base, k) for k in ("model", "conv_channels", "gru_units", "precision")},
              "steps_per_call": args.steps_per_call,
              "torch_skipped": why_not, "load_avg_before": os.getloadavg(), "runs": []}
    if why_not:
        print(why_not)
    for crop in crops:
        for batch in batch_sizes:
            cfg = base.replace(crop_seconds=crop, batch_size=batch)
            inputs = _train_inputs(cfg, batch)
            jax_run, jinfo = _jax_runner(cfg, inputs, args.steps_per_call)
            runs = {"jax": jax_run}
            if ref is not None:
                runs["torch"] = ref.make_runner(cfg, _N_CLASSES, jinfo["variables"], inputs, gpu=on_gpu,
                                                threads=args.torch_threads or os.cpu_count())
                torch_first_s = runs["torch"]()  # torch.compile compiles here on a GPU
            for run in runs.values():  # warm-up
                run(), run()
            times = {name: [] for name in runs}
            for _ in range(args.repeats):  # interleaved, so load from other processes hits both alike
                for name, run in runs.items():
                    times[name].append(run())
            entry = {"crop_s": crop, "batch": batch, "flops_per_step": jinfo["flops"],
                     "bytes_per_step": jinfo["bytes"], "flops_per_clip": jinfo["flops"] / batch,
                     "bytes_per_clip": jinfo["bytes"] / batch, "rows": []}
            for name, t in times.items():
                med = float(np.median(t))
                row = {"impl": name, "median_s": med, "min_s": float(min(t)), "clips_per_s": batch / med,
                       "tflops": jinfo["flops"] / med / 1e12,
                       "peak_fraction": None if peak is None else jinfo["flops"] / med / peak}
                if name == "jax":
                    row.update(compile_s=jinfo["compile_s"], xla_bytes=jinfo["xla_bytes"],
                               peak_bytes=(jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use"))
                else:
                    row.update(impl="torch (compile)" if on_gpu else "torch (eager)", compile_s=torch_first_s,
                               peak_bytes=ref.peak_cuda_bytes() if on_gpu else None, threads=ref.torch.get_num_threads())
                entry["rows"].append(row)
            if ref is not None:
                entry["jax_speedup"] = entry["rows"][1]["median_s"] / entry["rows"][0]["median_s"]
            result["runs"].append(entry)
    result["load_avg_after"] = os.getloadavg()
    _print_train(result, args.repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return result


def _print_train(result, repeats):
    d, c = result["device"], result["config"]
    print(f"training step ({c['model']} {'/'.join(map(str, c['conv_channels']))}, {c['precision']}), "
          f"{d['backend']} ({d['device_kind']}, {d['n_devices']} device(s)); median of {repeats}, interleaved; "
          f"1-min load {result['load_avg_before'][0]:.2f} -> {result['load_avg_after'][0]:.2f}")
    print(f"{'crop':>5} {'batch':>5} {'impl':<16} {'median s':>9} {'min s':>8} {'clips/s':>8} {'TFLOP/s':>8} "
          f"{'of peak':>8} {'memory':>9} {'compile s':>9}")
    for e in result["runs"]:
        for r in e["rows"]:
            frac = "unknown" if r["peak_fraction"] is None else f"{r['peak_fraction']:.1%}"
            mem = r.get("peak_bytes") or r.get("xla_bytes")
            mem = "n/a" if mem is None else f"{mem / 2**20:.0f} MiB"
            print(f"{e['crop_s']:5g} {e['batch']:5d} {r['impl']:<16} {r['median_s']:9.4f} {r['min_s']:8.4f} "
                  f"{r['clips_per_s']:8.1f} {r['tflops']:8.4f} {frac:>8} {mem:>9} {r['compile_s']:9.2f}")
        speed = f"; jax is {e['jax_speedup']:.2f}x torch" if "jax_speedup" in e else ""
        print(f"{'':12}XLA cost per clip: {e['flops_per_clip'] / 1e9:.3f} GFLOP, "
              f"{e['bytes_per_clip'] / 1e6:.1f} MB{speed}")
    print("memory: device peak where reported (GPU), else XLA's arguments + outputs + temporaries (jax on CPU)")


def _add_train_args(parser):
    ints, floats = (lambda s: [int(v) for v in s.split(",")]), (lambda s: [float(v) for v in s.split(",")])
    parser.add_argument("--batch-sizes", type=ints, help="global batch sizes (GPU default 4,32,256; CPU 4,32)")
    parser.add_argument("--crops", type=floats, help="crop lengths, s (GPU default 3,30; CPU 3)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per implementation after warm-up")
    parser.add_argument("--preset", choices=("choi", "cpu"), default="choi",
                        help="choi: Config(), 64/128/128/128; cpu: config.default_config('cpu'), 32/64/64/64")
    parser.add_argument("--model", choices=("crnn", "cnn"), default="crnn")
    parser.add_argument("--channels", type=ints, help="conv channels, e.g. 64,128,128,128 (overrides --preset)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--steps-per-call", type=int, default=1,
                        help="JAX training steps per device call (lax.scan), as train.py's flag; times are per step")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s, if not in the table")
    parser.add_argument("--torch-threads", type=int, help="torch CPU threads (default: all cores, as XLA uses)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers here")


# name -> (add its options, run it, one-line help)
_SUBCOMMANDS = {
    "mel": (_add_mel_args, bench_mel, "log-mel front end vs librosa"),
    "train": (_add_train_args, bench_train, "training step vs the PyTorch twin"),
}


def main(argv=None):
    from crnn_jax.cli import HelpFormatter  # every flag's help ends with its default

    parser = argparse.ArgumentParser(prog="crnn-jax bench", description=__doc__.split("\n")[0],
                                     formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, run, help_text) in _SUBCOMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, formatter_class=HelpFormatter))
        sub.choices[name].set_defaults(func=run)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValueError as e:  # a bad flag value: one line, no traceback
        print(f"crnn_jax.bench: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
