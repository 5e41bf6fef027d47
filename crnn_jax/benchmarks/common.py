"""What every `python -m crnn_jax.bench` subcommand shares: device and versions, peak rates, test audio, a timer."""

import importlib.metadata
import platform
import time

import jax
import numpy as np

# Peak DRAM/HBM bandwidth in bytes/s, matched as a substring of jax's device_kind.
PEAK_BANDWIDTH = {
    "H100 PCIe": 2.0e12,
    "H100": 3.35e12,  # SXM, "NVIDIA H100 80GB HBM3"
    "H200": 4.8e12,
    "A100-SXM4-80GB": 2.039e12,
    "A100-SXM4-40GB": 1.555e12,
}


def versions():
    names = ("jax", "jaxlib", "librosa", "numpy")
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info():
    d = jax.devices()[0]
    return {"backend": jax.default_backend(), "device_kind": d.device_kind,
            "n_devices": jax.device_count(), "machine": platform.processor() or platform.machine()}


def peak_bandwidth(device_kind):
    """Peak memory bandwidth in bytes/s for device_kind, or None when not in the table."""
    for key, value in PEAK_BANDWIDTH.items():
        if key in device_kind:
            return value
    return None


def sine_audio(batch, n_samples, sample_rate, seed=0):
    """[batch, n_samples] float32: a few sines per clip plus noise, roughly music-like levels."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples, dtype=np.float64) / sample_rate
    freqs = rng.uniform(50.0, 5000.0, size=(batch, 4, 1))  # Hz
    tones = np.sin(2 * np.pi * freqs * t).sum(axis=1)  # [batch, n_samples]
    return (0.1 * tones + 0.01 * rng.standard_normal((batch, n_samples))).astype(np.float32)


def timed(fn):
    """Seconds fn() takes (wall clock)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# Dense peak FLOP/s (no sparsity), matched as a substring of device_kind, first match wins. "fp32" is TF32
# tensor-core math, JAX's default for float32 convs/matmuls on these GPUs (the torch peer is set to match).
# A CPU's device_kind is just "cpu": pass --peak-tflops (see experiments/BENCHMARKS.md).
PEAK_FLOPS = {
    "H100 PCIe": {"fp32": 378e12, "bf16": 756e12},
    "H100": {"fp32": 494.7e12, "bf16": 989.4e12},  # SXM
    "H200": {"fp32": 494.7e12, "bf16": 989.4e12},
    "A100": {"fp32": 156e12, "bf16": 312e12},
}


def peak_flops(device_kind, precision):
    """Dense peak FLOP/s of device_kind at precision ("fp32" | "bf16"), or None when not in the table."""
    return next((p[precision] for key, p in PEAK_FLOPS.items() if key in device_kind), None)

