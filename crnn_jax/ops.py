"""Backend-specific kernels behind one switch, so that model.py reads as the network alone.

The switch is `conv_impl()`: "cpu" (the convolution forms below that XLA's CPU backend runs fast) or
"xla" (lax.conv_general_dilated and XLA's own derivative: what accelerators use). It resolves, first
match wins, from
    1. `use("cpu" | "xla" | "auto")`, a context manager (tests flip it on a CPU);
    2. the environment variable CRNN_JAX_OPS = cpu | xla | auto;
    3. "auto": "cpu" on the CPU backend, "xla" on every other.
The choice is read when a model is traced, so a function jitted under one setting keeps it: flip the
switch around building (and jitting) a new function, not around calling an old one.

Pooling (`max_pool`) has one form on every backend: the reshape-and-max below gives the values of
nn.max_pool with an elementwise gradient. Why each CPU form exists, with timings: experiments/BENCHMARKS.md,
section "What the profile said" (train). Imports nothing from the project.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

import jax
import jax.numpy as jnp

IMPLS = ("auto", "cpu", "xla")
ENV = "CRNN_JAX_OPS"
_override: str | None = None  # set by use()

_NHWC = ("NHWC", "HWIO", "NHWC")


def _check(impl: str, where: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"{where} must be one of {', '.join(IMPLS)}, got {impl!r}")
    return impl


def conv_impl() -> str:
    """The convolution kernels in force now: "cpu" or "xla" (resolution order in the module docstring)."""
    impl = _override or _check(os.environ.get(ENV, "auto").strip().lower() or "auto", ENV)
    if impl == "auto":
        return "cpu" if jax.default_backend() == "cpu" else "xla"
    return impl


@contextlib.contextmanager
def use(impl: str) -> Iterator[None]:
    """Within the block, conv_impl() resolves `impl` ("cpu", "xla" or "auto"), whatever CRNN_JAX_OPS says."""
    global _override
    _check(impl, "ops.use()")
    old, _override = _override, impl
    try:
        yield
    finally:
        _override = old


def conv_general_dilated_for() -> Callable:
    """The convolution for nn.Conv(conv_general_dilated=...) under the current switch: lhs [batch, t, f,
    c_in], rhs [kh, kw, c_in, c_out] -> [batch, t, f, c_out], with lax.conv_general_dilated's signature."""
    return _conv_for_flax if conv_impl() == "cpu" else jax.lax.conv_general_dilated


def max_pool(x: jax.Array, pool: tuple[int, int]) -> jax.Array:
    """Max over non-overlapping (time, freq) windows: [batch, t, f, c] -> [batch, t // tp, f // fp, c].

    The same values as nn.max_pool(x, pool, strides=pool) (VALID: ragged edges dropped), as a reshape and
    a max. The gradient of a reduce_window max makes XLA track the argmax with four int32 index arrays the
    size of the input (about half of a CPU training step, measured); this one is elementwise (ties share it).
    """
    b, t, f, c = x.shape
    tp, fp = pool
    x = x[:, : t - t % tp, : f - f % fp]  # drop the ragged edges, as VALID pooling does
    x = x.reshape(b, t // tp, tp, f // fp, fp, c)  # [batch, t', tp, f', fp, channels]: windows made axes
    return x.max(axis=(2, 4))


# --- the "cpu" convolutions ----------------------------------------------------------------------------

def _conv_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 SAME convolution: x [batch, t, f, c_in], kernel [kh, kw, c_in, c_out] -> [batch, t, f, c_out]."""
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_NHWC)


def _patches(x: jax.Array, kh: int, kw: int) -> jax.Array:
    """The im2col matrix: the SAME-padded kh x kw neighbourhood of every pixel, [batch, t, f, c] ->
    [batch * t * f, kh * kw * c], each row ordered (dt, df, c) like an HWIO kernel reshaped to
    [kh * kw * c_in, c_out]."""
    b, t, f, c = x.shape
    xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))  # [batch, t + kh - 1, f + kw - 1, c]
    cols = jnp.concatenate([xp[:, i:i + t, j:j + f] for i in range(kh) for j in range(kw)], axis=-1)
    return cols.reshape(b * t * f, kh * kw * c)  # [pixels, kh * kw * c]


@jax.custom_vjp
def _conv_same_cpu(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """_conv_same with a gradient XLA's CPU backend runs fast (same values up to summation order).

    XLA computes a convolution's kernel gradient as a convolution whose window is the whole feature map
    (65 x 48 for the second block of a 3 s crop), and depending on the surrounding program its layout
    assignment leaves that convolution, and the input gradient's, in dimension orders (f01b_i01o,
    01oi) that its CPU runtime executes several times slower: the same CPU-preset training step (batch 16)
    took 0.26 s on its own and 2.7 s inside a length-1 lax.scan, as train.py runs it; the Choi-size step
    at batch 32 there took 9.8 s, and 1.4 s with this function. Here the kernel gradient is one matrix
    product of the im2col patches [pixels, kh * kw * c_in] with the output gradient [pixels, c_out], and
    the input gradient a plain convolution with a materialised flipped kernel: the fast form every time.
    """
    return _conv_same(x, kernel)


def _conv_same_cpu_fwd(x, kernel):
    return _conv_same(x, kernel), (x, kernel)


def _conv_same_cpu_bwd(residuals, g):
    x, kernel = residuals
    kh, kw, c_in, c_out = kernel.shape
    # The input gradient of a stride-1 SAME convolution with an odd kernel is the same convolution of g
    # with the kernel flipped in space and its channel axes swapped. The barrier keeps that small
    # [kh, kw, c_out, c_in] kernel materialised: folded into the convolution's dimension labels instead,
    # XLA:CPU sometimes picks the slow kernel layout (01oi).
    flipped = jax.lax.optimization_barrier(jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))  # [kh, kw, c_out, c_in]
    dx = _conv_same(g, flipped)  # [batch, t, f, c_in]
    patches = _patches(x, kh, kw)  # [pixels, kh * kw * c_in]
    dk = jnp.matmul(patches.T, g.reshape(-1, c_out), preferred_element_type=jnp.float32)  # [kh * kw * c_in, c_out]
    return dx, dk.reshape(kernel.shape).astype(kernel.dtype)  # [kh, kw, c_in, c_out]


_conv_same_cpu.defvjp(_conv_same_cpu_fwd, _conv_same_cpu_bwd)


def _conv_same_im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """_conv_same as one matrix product of the im2col patches, differentiated by XLA: the fast form on
    XLA:CPU for few input channels (the first block's one), whose patches are small and whose direct
    convolution runs at ~6 GFLOP/s there (Choi size, batch 32: 0.13 s instead of 0.23 s forward and
    backward). x [batch, t, f, c_in], kernel [kh, kw, c_in, c_out] -> [batch, t, f, c_out]."""
    b, t, f, _ = x.shape
    kh, kw, c_in, c_out = kernel.shape
    y = jnp.matmul(_patches(x, kh, kw), kernel.reshape(kh * kw * c_in, c_out), preferred_element_type=jnp.float32)
    return y.astype(x.dtype).reshape(b, t, f, c_out)  # [batch, t, f, c_out]


def _conv_for_flax(lhs, rhs, window_strides, padding, *, lhs_dilation=None, rhs_dilation=None,
                   feature_group_count=1, **unused):
    """The "cpu" convolution, with lax.conv_general_dilated's signature for nn.Conv(conv_general_dilated=...):
    lhs [batch, t, f, c_in], rhs [kh, kw, c_in, c_out] -> [batch, t, f, c_out].
    _conv_same_im2col for at most 4 input channels, _conv_same_cpu otherwise (timings in their docstrings)."""
    kh, kw = rhs.shape[:2]
    if tuple(window_strides) != (1, 1) or padding != "SAME" or feature_group_count != 1 or any(
            d not in (None, (1, 1)) for d in (lhs_dilation, rhs_dilation)) or not (kh % 2 and kw % 2):
        raise ValueError("ConvBlock's CPU convolution supports odd kernels, stride 1, SAME padding, "
                         "no dilation, no groups only")
    if rhs.shape[2] <= 4:
        return _conv_same_im2col(lhs, rhs)
    return _conv_same_cpu(lhs, rhs)
