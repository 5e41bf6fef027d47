"""Log-mel spectrogram front end in pure JAX: HTK mel scale, periodic Hann STFT, dB.

Numerically it matches librosa.feature.melspectrogram(..., htk=True, norm=None) followed by
librosa.power_to_db, except that top_db clipping is per example (see power_to_db).
librosa is only the oracle in the tests; it is never imported here.

Shapes are time-major: audio [..., n_samples] -> spectrogram [..., n_frames, n_mels].
All STFT/mel arguments are static Python numbers, so every function here can run under
jax.jit (pass them as keywords / static arguments; MelConfig is hashable).
"""

import dataclasses
import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

# Framing by strided slices costs one slice per `gcd(n_fft, hop)`-sample block of a frame; past
# this many blocks an index gather is the smaller graph.
_MAX_FRAME_BLOCKS = 64
_PAD_MODES = ("constant", "reflect")


def hz_to_mel(f):
    """Hz -> mel on the HTK scale, m = 2595 * log10(1 + f / 700).

    f: frequency in Hz, a Python/numpy scalar or array, or a jax array. Returns the same kind.
    """
    xp = jnp if isinstance(f, jax.Array) else np
    return 2595.0 * xp.log10(1.0 + xp.asarray(f) / 700.0)


def mel_to_hz(m):
    """mel -> Hz on the HTK scale, the exact inverse of hz_to_mel: f = 700 * (10**(m / 2595) - 1).

    m: mel value(s), a Python/numpy scalar or array, or a jax array. Returns the same kind.
    """
    xp = jnp if isinstance(m, jax.Array) else np
    return 700.0 * (xp.power(10.0, xp.asarray(m) / 2595.0) - 1.0)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_stft_args(*, sample_rate, n_fft, n_mels, f_min, f_max, hop_length=None, power=None):
    """Argument checks shared by mel_filterbank, mel_spectrogram and MelConfig; returns f_max in Hz."""
    if not sample_rate > 0:
        raise ValueError(f"sample_rate must be > 0 Hz, got {sample_rate!r}")
    _check_positive_int("n_fft", n_fft)
    _check_positive_int("n_mels", n_mels)
    if hop_length is not None:
        _check_positive_int("hop_length", hop_length)
    if power is not None and not power > 0:
        raise ValueError(f"power must be > 0 (1: magnitude, 2: power), got {power!r}")
    nyquist = sample_rate / 2.0
    f_max = nyquist if f_max is None else f_max
    if not f_min >= 0:
        raise ValueError(f"f_min must be >= 0 Hz, got {f_min!r}")
    if f_max > nyquist:
        raise ValueError(
            f"f_max={f_max} Hz is above the Nyquist frequency sample_rate/2={nyquist} Hz"
        )
    if f_min >= f_max:
        raise ValueError(f"f_min={f_min} Hz must be below f_max={f_max} Hz")
    return f_max


@functools.lru_cache(maxsize=64)
def _filterbank_f64(sample_rate, n_fft, n_mels, f_min, f_max):
    """Triangular HTK filters in float64: [n_fft//2 + 1, n_mels] (a cached constant)."""
    bin_hz = np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)  # [n_bins]
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]  # each [n_mels]
    rising = (bin_hz[:, None] - lower) / (centre - lower)  # [n_bins, n_mels]
    falling = (upper - bin_hz[:, None]) / (upper - centre)  # [n_bins, n_mels]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights.flags.writeable = False  # shared by the cache
    return weights


def mel_filterbank(*, sample_rate, n_fft, n_mels, f_min=0.0, f_max=None):
    """Triangular mel filterbank (HTK scale, peak 1, no area normalisation).

    sample_rate: Hz. n_fft: FFT size in samples. n_mels: number of filters.
    f_min, f_max: band edges in Hz (f_max=None means sample_rate / 2).
    The n_mels + 2 filter edges are equally spaced in mel; filter i rises linearly from edge i to 1 at
    edge i+1 and falls back to 0 at edge i+2, evaluated at the FFT bin frequencies k * sample_rate / n_fft.
    Returns a float32 numpy constant [n_fft//2 + 1, n_mels] (equal to librosa's htk=True, norm=None, transposed).
    Raises ValueError for invalid arguments, including filters that cover no FFT bin.
    """
    f_max = _check_stft_args(
        sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, f_min=f_min, f_max=f_max
    )
    weights = _filterbank_f64(float(sample_rate), int(n_fft), int(n_mels), float(f_min), float(f_max))
    n_empty = int(np.sum(weights.max(axis=0) <= 0.0))
    if n_empty:
        raise ValueError(
            f"n_mels={n_mels} leaves {n_empty} empty mel filters at n_fft={n_fft}, "
            f"sample_rate={sample_rate}; lower n_mels or raise n_fft"
        )
    return weights.astype(np.float32)


@functools.lru_cache(maxsize=16)
def _hann(n_fft):
    """Periodic Hann window [n_fft], as scipy.signal.get_window('hann', n_fft, fftbins=True)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def _n_frames(n_samples, n_fft, hop_length, center):
    """Number of STFT frames, as librosa counts them."""
    if center:
        return 1 + (n_samples + 2 * (n_fft // 2) - n_fft) // hop_length
    return 1 + (n_samples - n_fft) // hop_length


def _frame(x, n_fft, hop_length, n_frames):
    """Overlapping frames of the (already padded) signal: [..., length] -> [..., n_frames, n_fft].

    Used when hop_length does not divide n_fft. If a frame is a few whole blocks of g = gcd(n_fft, hop)
    samples, the frames are strided slices of the signal cut into blocks (copies XLA fuses);
    otherwise an index gather.
    """
    g = math.gcd(n_fft, hop_length)
    per_frame, stride = n_fft // g, hop_length // g  # in blocks
    if per_frame > _MAX_FRAME_BLOCKS:
        idx = np.arange(n_frames)[:, None] * hop_length + np.arange(n_fft)  # [n_frames, n_fft]
        return x[..., idx]
    n_blocks = (n_frames - 1) * stride + per_frame
    blocks = x[..., : n_blocks * g].reshape(*x.shape[:-1], n_blocks, g)  # [..., n_blocks, g]
    last = (n_frames - 1) * stride
    pieces = [blocks[..., j : j + last + 1 : stride, :] for j in range(per_frame)]  # [..., n_frames, g]
    return jnp.concatenate(pieces, axis=-1)  # [..., n_frames, n_fft]


def _frames_to_mel(frames, fbank, power):
    """Windowed frames [..., n_fft] -> mel energies [..., n_mels]."""
    n_fft = frames.shape[-1]
    spec = jnp.fft.rfft(frames * _hann(n_fft), axis=-1)  # [..., n_fft//2 + 1] complex64
    energy = jnp.square(spec.real) + jnp.square(spec.imag)  # |X|**2 without a sqrt
    if power != 2.0:
        # |X|**power = energy**(power/2); the double where keeps the gradient finite at energy 0.
        positive = energy > 0
        energy = jnp.where(positive, jnp.where(positive, energy, 1.0) ** (power / 2.0), 0.0)
    # HIGHEST: GPUs would otherwise round float32 matmul inputs to TF32 (~1e-3 relative error).
    return jnp.matmul(energy, fbank, precision=jax.lax.Precision.HIGHEST)


def _mel_power(x, *, fbank, n_fft, hop_length, n_frames, power, center, pad_mode):
    """[..., n_samples] float32 -> [..., n_frames, n_mels] mel spectrogram."""
    lead = x.shape[:-1]
    if center:
        x = jnp.pad(x, [(0, 0)] * len(lead) + [(n_fft // 2, n_fft // 2)], mode=pad_mode)
    if n_fft % hop_length:
        return _frames_to_mel(_frame(x, n_fft, hop_length, n_frames), fbank, power)
    # hop divides n_fft (the default: n_fft = 2 * hop). Frames t = q, q + r, q + 2r, ... (phase q,
    # r = n_fft // hop) tile the signal back to back, so each phase is a plain reshape: no gather, no
    # concatenation. The r phases are independent chains that XLA's CPU runtime runs concurrently.
    r = n_fft // hop_length
    per_phase = -(-n_frames // r)  # ceil; up to r - 1 surplus frames are cut below
    need = (r - 1) * hop_length + per_phase * n_fft
    if x.shape[-1] < need:  # the surplus frames read zeros past the end
        x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, need - x.shape[-1])])
    phases = [
        x[..., q * hop_length : q * hop_length + per_phase * n_fft].reshape(*lead, per_phase, n_fft)
        for q in range(r)
    ]  # r x [..., per_phase, n_fft]
    mels = jnp.stack([_frames_to_mel(f, fbank, power) for f in phases], axis=-2)  # [..., per_phase, r, n_mels]
    mels = mels.reshape(*lead, per_phase * r, fbank.shape[-1])  # frame t = per_phase_index * r + q
    return mels[..., :n_frames, :]


def mel_spectrogram(
    audio,
    *,
    sample_rate,
    n_fft,
    hop_length,
    n_mels,
    f_min=0.0,
    f_max=None,
    power=2.0,
    center=True,
    pad_mode="constant",
):
    """Mel spectrogram of raw audio: [..., n_samples] -> [..., n_frames, n_mels] float32 (time-major).

    audio: waveform, any leading batch axes, cast to float32. sample_rate: Hz. n_fft, hop_length: samples.
    f_min, f_max: Hz. power: exponent of |STFT| (2: power, 1: magnitude).
    center: pad n_fft//2 samples on both sides (pad_mode "constant" zeros or "reflect") so frame t is
    centred on sample t * hop_length; n_frames = 1 + (n_samples + 2*(n_fft//2) - n_fft) // hop_length,
    or 1 + (n_samples - n_fft) // hop_length without centring.
    Periodic Hann window, real FFT, |X|**power, then the mel_filterbank matmul.
    All checks are on static shapes and Python arguments, so they raise ValueError under jax.jit too.
    """
    return _mel_spectrogram(
        jnp.asarray(audio, dtype=jnp.float32), sample_rate=sample_rate, n_fft=n_fft,
        hop_length=hop_length, n_mels=n_mels, f_min=f_min, f_max=f_max, power=power, center=center,
        pad_mode=pad_mode, to_db=False, top_db=None,
    )


# Jitted so that eager calls hit a compilation cache instead of re-tracing the per-clip loop each time
# (~0.5 s a call); inside an outer jit it is simply inlined.
@functools.partial(jax.jit, static_argnames=(
    "sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max", "power", "center", "pad_mode",
    "to_db", "top_db"))
def _mel_spectrogram(audio, *, sample_rate, n_fft, hop_length, n_mels, f_min, f_max, power, center,
                     pad_mode, to_db, top_db):
    """mel_spectrogram of float32 audio; with to_db, power_to_db(ref=1, amin=1e-10, top_db) as well,
    inside the same per-clip loop on CPU (its clipping is per example, so this changes nothing)."""
    _check_stft_args(
        sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, f_min=f_min, f_max=f_max,
        hop_length=hop_length, power=power,
    )
    fbank = mel_filterbank(
        sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, f_min=f_min, f_max=f_max
    )
    if pad_mode not in _PAD_MODES:
        raise ValueError(f"pad_mode must be one of {_PAD_MODES}, got {pad_mode!r}")
    if audio.ndim == 0 or audio.shape[-1] == 0:
        raise ValueError(f"audio must have shape [..., n_samples] with n_samples > 0, got {audio.shape}")
    n_samples = audio.shape[-1]
    if not center and n_samples < n_fft:
        raise ValueError(
            f"audio has {n_samples} samples, fewer than n_fft={n_fft}, with center=False; "
            "pad the audio or use center=True"
        )
    n_frames = _n_frames(n_samples, n_fft, hop_length, center)

    def one(x):  # [..., n_samples] -> [..., n_frames, n_mels]
        mel = _mel_power(
            x, fbank=fbank, n_fft=n_fft, hop_length=hop_length, n_frames=n_frames, power=float(power),
            center=center, pad_mode=pad_mode,
        )
        return power_to_db(mel, ref=1.0, amin=1e-10, top_db=top_db) if to_db else mel

    batch = audio.reshape(-1, n_samples)  # [batch, n_samples]
    if jax.default_backend() == "cpu":
        # XLA's CPU FFT is single threaded and memory bound: one clip at a time keeps frames and
        # spectrum (~13 MB for 30 s) in cache. Measured ~1.7x faster than the whole batch at once.
        mel = jax.lax.map(one, batch)
    else:
        mel = one(batch)  # accelerators want the whole batch in one kernel
    return mel.reshape(*audio.shape[:-1], n_frames, n_mels)  # [..., n_frames, n_mels]


def power_to_db(S, *, ref=1.0, amin=1e-10, top_db=80.0):
    """Power -> decibels: 10*log10(max(amin, S)) - 10*log10(max(amin, ref)), float32.

    S: power spectrogram [..., n_frames, n_mels] (non-negative). ref, amin: same units as S.
    top_db: if not None, values more than top_db dB below the example's own maximum (over its last two
    axes) are raised to that floor. Per example on purpose: librosa clips against the maximum of the
    whole array, so the two agree only for a single example.
    """
    if not amin > 0:
        raise ValueError(f"amin must be > 0, got {amin!r}")
    if top_db is not None and not top_db >= 0:
        raise ValueError(f"top_db must be >= 0 dB or None, got {top_db!r}")
    S = jnp.asarray(S, dtype=jnp.float32)
    db = 10.0 * jnp.log10(jnp.maximum(amin, S)) - 10.0 * jnp.log10(jnp.maximum(amin, ref))
    if top_db is None:
        return db
    axes = tuple(range(max(db.ndim - 2, 0), db.ndim))  # the [frames, mels] of each example
    return jnp.maximum(db, jnp.max(db, axis=axes, keepdims=True) - top_db)


COMPRESSIONS = ("db", "pcen")


@dataclasses.dataclass(frozen=True)
class MelConfig:
    """Front-end settings (hashable, so it can be a static jit argument).

    sample_rate: Hz. n_fft, hop_length: samples. n_mels: filters. f_min, f_max: Hz.
    power: exponent of |STFT|. top_db: dynamic range kept below each example's maximum, dB (None: all).
    compression: "db" (log_mel_spectrogram) or "pcen" (pcen.py on the mel spectrogram; top_db unused; PCEN's
    usual input is a magnitude mel, power=1). The model's front end applies it.
    """

    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 96
    f_min: float = 0.0
    f_max: Optional[float] = 11025.0
    power: float = 2.0
    top_db: Optional[float] = 80.0
    compression: str = "db"

    def __post_init__(self):
        _check_stft_args(
            sample_rate=self.sample_rate, n_fft=self.n_fft, n_mels=self.n_mels, f_min=self.f_min,
            f_max=self.f_max, hop_length=self.hop_length, power=self.power,
        )
        if self.top_db is not None and not self.top_db >= 0:
            raise ValueError(f"top_db must be >= 0 dB or None, got {self.top_db!r}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}")
        self.filterbank()  # raises if some filter would be empty; cached, so this is cheap

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for n_samples of audio (center=True)."""
        return _n_frames(n_samples, self.n_fft, self.hop_length, center=True)

    def filterbank(self):
        """The mel filterbank [n_fft//2 + 1, n_mels], float32."""
        return mel_filterbank(
            sample_rate=self.sample_rate, n_fft=self.n_fft, n_mels=self.n_mels,
            f_min=self.f_min, f_max=self.f_max,
        )


def log_mel_spectrogram(audio, config: MelConfig):
    """Log-mel spectrogram in dB: [..., n_samples] -> [..., n_frames, n_mels] float32.

    audio: waveform at config.sample_rate Hz. Centred frames, zero padding, ref 1.0, amin 1e-10,
    per-example top_db clipping. Used inside the jitted training step on raw crops [batch, samples].
    """
    return _mel_spectrogram(
        jnp.asarray(audio, dtype=jnp.float32), sample_rate=config.sample_rate, n_fft=config.n_fft,
        hop_length=config.hop_length, n_mels=config.n_mels, f_min=config.f_min, f_max=config.f_max,
        power=config.power, center=True, pad_mode="constant", to_db=True, top_db=config.top_db,
    )
