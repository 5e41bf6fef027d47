"""`python -m crnn_jax.bench mel`: the jitted log-mel front end (mel.log_mel_spectrogram, default
MelConfig) beside librosa doing the same work clip by clip in the same run; on a GPU also 1,000 clips
featurised against the device's memory bandwidth (`thousand_clips`)."""

import dataclasses
import datetime
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from crnn_jax import mel
from crnn_jax.benchmarks.common import device_info, peak_bandwidth, sine_audio, timed, versions


def _librosa_log_mel(config):
    """Clip-by-clip librosa equivalent of mel.log_mel_spectrogram, or None if librosa is missing."""
    try:
        import librosa
    except ImportError:
        print("librosa is not installed: timing jax only (pip install 'crnn_jax[bench]' for the comparison)")
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


def thousand_clips(config, seconds, *, total=1000, chunk=100):
    """Featurise `total` clips of `seconds` s with the jitted log-mel, `chunk` clips per call, on the
    default device -> {"seconds", "clips", "clips_per_s", "compile_s", "bytes_per_s", "min_bytes_per_s",
    "peak_bytes_per_s", "bandwidth_fraction"}. bytes: XLA's cost analysis ("bytes accessed"; a mapped
    per-clip loop body is counted once, so one clip's cost times the clips); min_bytes: each input sample
    read once (float32) and each log-mel value written once, the floor any implementation moves."""
    chunk = min(chunk, total)
    fn = jax.jit(lambda a: mel.log_mel_spectrogram(a, config))
    n_samples = int(round(seconds * config.sample_rate))
    audio = jax.random.normal(jax.random.key(0), (chunk, n_samples), jnp.float32) * 0.1
    compile_s = timed(lambda: fn(audio).block_until_ready())  # compile for this chunk shape
    cost = fn.lower(audio[:1]).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    bytes_per_clip = float(cost.get("bytes accessed", float("nan")))
    min_bytes_per_clip = 4.0 * (n_samples + config.n_frames(n_samples) * config.n_mels)
    n_calls = -(-total // chunk)
    start = time.perf_counter()
    for _ in range(n_calls):
        out = fn(audio)
    out.block_until_ready()
    total_s = time.perf_counter() - start
    n_clips = n_calls * chunk
    peak = peak_bandwidth(jax.devices()[0].device_kind)
    achieved = bytes_per_clip * n_clips / total_s
    return {"seconds": total_s, "clips": n_clips, "clip_seconds": seconds, "clips_per_s": n_clips / total_s,
            "compile_s": compile_s, "bytes_per_s": achieved, "min_bytes_per_s": min_bytes_per_clip * n_clips / total_s,
            "peak_bytes_per_s": peak, "bandwidth_fraction": None if peak is None else achieved / peak}


def bench_mel(args):
    """Throughput of the jitted log-mel front end beside librosa; prints a table, optionally writes JSON."""
    config = mel.MelConfig()
    n_samples = int(round(args.seconds * config.sample_rate))
    audio = sine_audio(args.batch, n_samples, config.sample_rate)
    fn = jax.jit(lambda a: mel.log_mel_spectrogram(a, config))
    device = device_info()

    audio_dev = jax.device_put(audio)
    compile_s = timed(lambda: fn(audio_dev).block_until_ready())
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
        jax_s.append(timed(lambda: fn(audio_dev).block_until_ready()))
        for name, run in peers.items():
            peer_s[name].append(timed(lambda: run(audio)))

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
        "device": device, "versions": versions(), "config": dataclasses.asdict(config),
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
        r = thousand_clips(config, args.seconds)
        fraction = "unknown" if r["bandwidth_fraction"] is None else f"{r['bandwidth_fraction']:.1%}"
        print(f"{r['clips']} x {args.seconds:g} s clips: {r['seconds']:.3f} s ({r['clips_per_s']:.0f} clips/s); "
              f"{r['bytes_per_s'] / 1e9:.0f} GB/s = {fraction} of peak bandwidth")
        result["gpu_1000_clips"] = r

    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return result


def add_args(parser):
    parser.add_argument("--batch", type=int, default=16, help="clips per call")
    parser.add_argument("--seconds", type=float, default=30.0, help="clip length, s")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls after warm-up")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers here")
