"""Per-channel energy normalisation (PCEN; Wang et al. 2017, "Trainable frontend for robust and far-field
keyword spotting"), hand-written in JAX as an alternative to the log (dB) compression of the mel front end:

    M[t] = (1 - b) M[t-1] + b S[t],  M[-1] = 1           (a one-pole low-pass per mel band: its energy)
    PCEN[t] = (S[t] / (eps + M[t])**gain + bias)**power - bias**power

Dividing by a band's own recent energy (automatic gain control per band) removes what is steady in a band,
such as a recording chain's equalisation or an album's mastering, and keeps its changes (onsets, rhythm): the
reason the field uses it against channel and recording differences (Lostanlen et al. 2019, "Per-channel
energy normalization: why and how"). Formula, defaults and the initial state are librosa.pcen's (librosa
0.10, max_size=1, zi=None: scipy's lfilter_zi, the steady state of an input of 1); tests/test_pcen.py holds
ours against it.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

# librosa's docs scale a magnitude mel spectrogram of audio in [-1, 1] by 2**31 before PCEN: its bias and eps
# are set for the magnitudes of 32-bit integer audio.
INPUT_SCALE = 2.0 ** 31


def smoothing_coefficient(time_constant: float, sample_rate: int, hop_length: int) -> float:
    """b of the energy's one-pole smoother, from its time constant (s), sample_rate (Hz) and hop (samples):
    librosa.pcen's (sqrt(1 + 4 T**2) - 1) / (2 T**2), T the time constant in frames."""
    t_frames = time_constant * sample_rate / float(hop_length)
    return (math.sqrt(1.0 + 4.0 * t_frames ** 2) - 1.0) / (2.0 * t_frames ** 2)


@functools.partial(jax.jit, static_argnames=("sample_rate", "hop_length", "gain", "bias", "power",
                                             "time_constant", "eps"))
def pcen(S: jax.Array, *, sample_rate: int, hop_length: int, gain: float = 0.98, bias: float = 2.0,
         power: float = 0.5, time_constant: float = 0.4, eps: float = 1e-6) -> jax.Array:
    """PCEN of a non-negative spectrogram S [..., frames, bands] -> [..., frames, bands] float32.

    sample_rate: Hz and hop_length: samples of S's frames (for the time constant, s). gain: the AGC
    exponent (0-1); bias, power: the root compression's offset and exponent (> 0); eps: keeps the
    division finite in silence. Computed as librosa does, in log1p/expm1 form (stable for tiny ratios).
    Compiled once per shape and settings (all but S static), so eager callers get the fused scan too.
    """
    S = jnp.asarray(S, jnp.float32)
    b = smoothing_coefficient(time_constant, sample_rate, hop_length)
    # The smoother is a linear recurrence, so it runs as a parallel (associative) scan over time: log2(frames)
    # steps instead of a sequential loop. Element t = (a_t, x_t) means M[t] = a_t * M[t-1] + x_t; M[-1] = 1
    # (librosa's initial state) folds into x_0 = b S[0] + (1 - b). a_t is the same for every band and example:
    # one [1, ..., frames, 1] column broadcasts in `combine` instead of a second array the size of S.
    a = jnp.full((1,) * (S.ndim - 2) + (S.shape[-2], 1), 1.0 - b, jnp.float32)
    x = (b * S).at[..., 0, :].add(1.0 - b)

    def combine(left, right):
        a1, x1 = left
        a2, x2 = right
        return a1 * a2, a2 * x1 + x2

    _, M = jax.lax.associative_scan(combine, (a, x), axis=S.ndim - 2)
    smooth = jnp.exp(-gain * (math.log(eps) + jnp.log1p(M / eps)))  # (eps + M)**-gain
    return (bias ** power) * jnp.expm1(power * jnp.log1p(S * smooth / bias))
