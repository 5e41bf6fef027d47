"""The built-in synthetic music's instruments: wavetable oscillators, enveloped voices, drums, rhythm grids,
chord progressions and melodies (vectorised numpy). crnn_jax/data/synth.py composes the ten classes from them.
Every function is pure: the randomness comes in as a numpy Generator."""

import functools

import numpy as np
from scipy.signal import lfilter

_TABLE = 2048  # wavetable length (samples per period)
_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR = np.array([0, 2, 3, 5, 7, 8, 10])
_PENTA = np.array([0, 3, 5, 7, 10])  # minor pentatonic


def _hz(midi):
    return 440.0 * 2.0 ** ((np.asarray(midi, np.float64) - 69.0) / 12.0)


def _steps(pattern):
    """'x...x...' -> step positions of the hits within the pattern."""
    return np.array([i for i, c in enumerate(pattern) if c == "x"])


# ---------------------------------------------------------------- oscillators and voices
def _table(amps, sr, f_top):
    """One period of a harmonic stack, amps[k-1] for harmonic k, cut so notes up to f_top Hz stay below 0.45 sr.
    -> [2, _TABLE] float32: the samples and the slope to the next sample (for linear interpolation)."""
    n = max(1, min(len(amps), _TABLE // 2 - 1, int(0.45 * sr / f_top)))
    spec = np.zeros(_TABLE // 2 + 1, np.complex128)
    spec[1:n + 1] = -1j * np.asarray(amps[:n])  # sine phase
    tab = np.fft.irfft(spec, _TABLE)
    tab /= np.abs(tab).max()
    return np.stack([tab, np.roll(tab, -1) - tab]).astype(np.float32)


def _tilt(tilt, n=200):
    """Harmonic amplitudes k**-tilt: tilt 1 is saw-like, larger is duller."""
    return np.arange(1, n + 1, dtype=np.float64) ** -tilt


def _pulse(duty, n=200):
    """Harmonic amplitudes of a pulse wave with the given duty cycle (0.5 = square: odd harmonics only)."""
    return np.sin(np.pi * duty * np.arange(1, n + 1)) / np.arange(1, n + 1)


# Hot paths work in float32 (float64 exp/sin/floor are ~10x slower here) and in blocks of _BLOCK samples: malloc
# maps and unmaps whole-clip temporaries (0.7 MB) each time, and those page faults took ~30% of the run time.
_BLOCK = 16384


def _lookup(tab, phase):
    """Wavetable read at phase [n] (cycles, float32), linearly interpolated. -> [n] float32"""
    x = phase - np.floor(phase)
    x *= _TABLE
    i = np.floor(x)
    x -= i  # fractional position between samples
    i = i.astype(np.int32)
    return np.take(tab[0], i, mode="clip") + x * np.take(tab[1], i, mode="clip")  # i is in range: skip checks


def _sine(phase, tau=None):
    return np.sin(phase * np.float32(2 * np.pi))


def _wave(tab):
    """The wave function of _voice for wavetable tab."""
    return lambda phase, tau: _lookup(tab, phase)


def _voice(n, sr, onsets, freqs, wave, *, attack, decay, amps=1.0, phase0=0.0, release=0.005):
    """Monophonic voice: note j starts at onsets[j] (s, sorted, may be < 0) and sounds until the next onset.

    freqs: Hz per note; wave(phase [m] cycles, tau [m] s since the onset) -> [m], pointwise; attack, decay,
    release: s (decay may be np.inf); amps: linear, phase0: start phase in cycles (scalars or one per note).
    -> [n] float32. Vectorised: per-sample note values by np.repeat, no Python loop over samples or notes.
    """
    on = np.round(np.asarray(onsets) * sr).astype(np.int64)
    keep = on < n
    freqs, amps, phase0 = (np.broadcast_to(np.asarray(v, np.float32), on.shape)[keep] for v in (freqs, amps, phase0))
    on = on[keep]
    if len(on) == 0 or on[0] > 0:  # a silent note until the first onset
        on, freqs, amps, phase0 = (np.append(np.zeros(1, v.dtype), v) for v in (on, freqs, amps, phase0))
    length = np.append(np.diff(on), 2 ** 40).astype(np.float32) / sr  # s until the next note cuts this one
    on_f = on.astype(np.float32)  # exact up to 2**24 samples (12 min at 22 kHz)
    out = np.empty(n, np.float32)
    for a in range(0, n, _BLOCK):
        b = min(a + _BLOCK, n)
        counts = np.diff(np.append(np.clip(on, a, b), b))  # samples of each note inside [a, b)
        per_sample = functools.partial(np.repeat, repeats=counts)  # [notes] -> [b - a]
        tau = (np.arange(a, b, dtype=np.float32) - per_sample(on_f)) * np.float32(1 / sr)
        env = per_sample(amps) * -np.expm1(tau * np.float32(-1 / attack)) * np.exp(tau * np.float32(-1 / decay))
        env *= np.minimum(np.float32(1), (per_sample(length) - tau) * np.float32(1 / release))  # fade before the cut
        out[a:b] = env * wave(per_sample(freqs) * tau + per_sample(phase0), tau)
    return out


def _voices(n, sr, onsets, freqs, wave, n_voices, *, amps, **kw):
    """Round-robin notes over n_voices monophonic voices so each note rings under the next ones. -> [n]"""
    return sum(_voice(n, sr, onsets[v::n_voices], freqs[v::n_voices], wave, amps=amps[v::n_voices], **kw)
               for v in range(n_voices))


# ---------------------------------------------------------------- percussion
def _noise(rng, n, colour=0.0):
    """White noise through a one-pole low-pass with coefficient colour (0 white .. 0.99 dark). -> [n]"""
    x = rng.random(n, dtype=np.float32) - np.float32(0.5)  # uniform: 2x cheaper than Gaussian, as white
    x = lfilter(np.ones(1, np.float32), np.array([1, -colour], np.float32), x)
    return x / (np.sqrt(np.dot(x, x) / n) + 1e-12)


def _drum(kind, rng, sr):
    """One hit of a drum sound with random parameters. -> [len] float32, peak 1."""
    dur = {"kick": 0.4, "snare": 0.3, "clap": 0.25, "hat": 0.08, "ohat": 0.35, "chip": 0.06}[kind]
    t = np.arange(int(dur * sr)) / sr
    if kind == "kick":  # decaying sine with a fast downward pitch sweep and a click
        f = rng.uniform(40, 60) + rng.uniform(80, 160) * np.exp(-t / rng.uniform(0.02, 0.05))
        x = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / rng.uniform(0.12, 0.25))
        x += 0.3 * rng.standard_normal(len(t)) * np.exp(-t / 0.003)
    elif kind == "snare":  # bright noise burst plus a short body tone
        x = np.diff(rng.standard_normal(len(t) + 1)) * np.exp(-t / rng.uniform(0.06, 0.14))
        x += 1.5 * np.sin(2 * np.pi * rng.uniform(170, 240) * t) * np.exp(-t / 0.04)
    elif kind == "clap":  # three quick bursts then a tail
        bursts = sum(np.exp(-np.clip(t - d, 0, None) / 0.006) * (t >= d) for d in (0.0, 0.011, 0.022))
        x = np.diff(rng.standard_normal(len(t) + 1)) * (bursts + 0.5 * np.exp(-t / 0.08))
    elif kind in ("hat", "ohat"):  # twice-differentiated noise: energy mostly above 5 kHz
        d = rng.uniform(0.012, 0.03) if kind == "hat" else rng.uniform(0.1, 0.2)
        x = np.diff(rng.standard_normal(len(t) + 2), 2) * np.exp(-t / d)
    else:  # "chip": short 8-bit style white-noise burst
        x = rng.standard_normal(len(t)) * np.exp(-t / rng.uniform(0.01, 0.03))
    return (x / np.abs(x).max()).astype(np.float32)


def _hits(n, sr, rng, hit, k, times, pattern, *, vel_db=1.5, jitter=0.003):
    """Place a drum hit at every grid step k whose position (k mod pattern length) is an 'x'. -> [n]"""
    sel = np.isin(k % len(pattern), _steps(pattern))
    ts = times[sel] + rng.normal(0, jitter, sel.sum())
    gs = (10 ** (rng.normal(0, vel_db, sel.sum()) / 20)).astype(np.float32)
    out = np.zeros(n, np.float32)
    for t0, g in zip(np.round(ts * sr).astype(np.int64), gs):  # one slice add per hit, ~50 per clip
        a, b = max(t0, 0), min(t0 + len(hit), n)
        if b > a:
            out[a:b] += g * hit[a - t0:b - t0]
    return out


def _grid(rng, seconds, step, cycle, swing=0.5):
    """Step numbers k and times (s) of a grid of `step` s, starting at a random phase of a `cycle`-step pattern
    (first time <= 0). swing > 0.5 delays every odd step by (2 swing - 1) step."""
    offset = rng.uniform(0, cycle * step)
    k = np.arange(int(np.ceil((seconds + offset) / step)) + 1)
    return k, k * step - offset + (k % 2) * (2 * swing - 1) * step


def _progression(rng, n_tones, scale=None):
    """2-4 diatonic chords (stacks of thirds) of scale (default: major or minor at random) as semitone offsets
    from the key's root, starting on the tonic. -> [n_chords, n_tones]"""
    scale = (_MAJOR if rng.random() < 0.5 else _MINOR) if scale is None else scale
    degrees = rng.choice([0, 3, 4, 5], size=rng.integers(2, 5))
    degrees[0] = 0
    steps = degrees[:, None] + 2 * np.arange(n_tones)[None, :]  # [n_chords, n_tones] scale steps
    return scale[steps % 7] + 12 * (steps // 7)


def _melody(rng, n_notes, steps, scale, top):
    """Random walk of scale degrees 0..top, reflected at the ends (not clipped, which would stick there), as
    semitone offsets. -> [n_notes]"""
    w = (np.cumsum(rng.choice(steps, n_notes)) + rng.integers(top)) % (2 * top)
    w = top - np.abs(w - top)  # [n_notes] degrees
    return scale[w % len(scale)] + 12 * (w // len(scale))
