"""Tests for crnn_jax.data.synth: purity, ranges, bad input, and that the "temporal-only" class pairs really share
their long-term spectra while a simple time-aware feature separates them. numpy only (no other project module)."""

import functools

import numpy as np
import pytest

from crnn_jax.data import synth

SR = 22050
PAIRS = {(2, 3): "pitch_direction", (4, 5): "loudness_direction", (6, 7): "stab_kick_coincidence"}


@functools.lru_cache(maxsize=None)
def _clips(labels, n, seconds=3.0, seed=1):
    """n clips of each label (tuple) -> (clips [len(labels) n, samples], labels [len(labels) n])."""
    x = [synth.generate_clip(l, seconds=seconds, sample_rate=SR, seed=seed, index=i) for l in labels for i in range(n)]
    return np.stack(x), np.repeat(labels, n)


# ---------------------------------------------------------------- features (numpy FFT only)

_N_FFT, _HOP = 1024, 512
_FREQS = np.fft.rfftfreq(_N_FFT, 1 / SR)
_EDGES = np.unique(np.geomspace(4, _N_FFT // 2, 41).astype(int))  # FFT-bin edges of ~40 log-spaced bands


def _power(x):
    """Hann-window STFT power. [samples] -> [frames, bins]"""
    n = 1 + (len(x) - _N_FFT) // _HOP
    idx = np.arange(_N_FFT)[None, :] + _HOP * np.arange(n)[:, None]  # [frames, n_fft] sample indices
    return np.abs(np.fft.rfft(x[idx].astype(np.float64) * np.hanning(_N_FFT), axis=1)) ** 2


def _bands(p):
    """[frames, bins] -> [frames, bands] power summed over log-spaced bands (about 90 Hz to 11 kHz)."""
    return np.add.reduceat(p[:, _EDGES[0]:_EDGES[-1]], _EDGES[:-1] - _EDGES[0], axis=1)


def _long_term(x):
    """Shape of the time-averaged log band spectrum, level removed. -> [bands]"""
    s = np.log(_bands(_power(x)).mean(0) + 1e-20)
    return s - s.mean()


def _band_range(lo, hi):
    return (_FREQS[_EDGES[:-1]] >= lo) & (_FREQS[_EDGES[:-1]] < hi)


def pitch_direction(x):
    """Mean sign of the jumps of the strongest partial (150-3000 Hz) between frames: > 0 mostly rising."""
    p = _power(x)
    band = (_FREQS > 150) & (_FREQS < 3000)
    d = np.diff(np.log(_FREQS[band][np.argmax(p[:, band], axis=1)]))
    return np.mean(np.sign(d[np.abs(d) > 0.03]))


def loudness_direction(x):
    """Mean sign of frame-to-frame changes in log energy: > 0 means slow rises and sudden drops."""
    return np.mean(np.sign(np.diff(np.log(_power(x).sum(1) + 1e-20))))


def stab_kick_coincidence(x):
    """Correlation of onsets (positive log-energy flux) in the kick band (40-150 Hz) and the chord band
    (300-2000 Hz): high when chords land on the drums."""
    b = _bands(_power(x))
    low, mid = (np.log(b[:, _band_range(lo, hi)].sum(1) + 1e-20) for lo, hi in ((40, 150), (300, 2000)))
    return np.corrcoef(np.maximum(np.diff(low), 0), np.maximum(np.diff(mid), 0))[0, 1]


def _nearest_centroid(f, y):
    """Two-fold (even/odd rows) nearest-centroid accuracy on standardised features f [n, d], labels y [n]."""
    f = f.reshape(len(f), -1)  # [n, d]
    acc = []
    for fold in (0, 1):
        test = np.arange(len(y)) % 2 == fold
        mu, sd = f[~test].mean(0), f[~test].std(0) + 1e-9
        g = (f - mu) / sd
        classes = np.unique(y)
        cents = np.stack([g[~test & (y == c)].mean(0) for c in classes])  # [classes, d]
        pred = classes[np.argmin(((g[test][:, None] - cents[None]) ** 2).sum(-1), axis=1)]
        acc.append(np.mean(pred == y[test]))
    return float(np.mean(acc))


# ---------------------------------------------------------------- purity and determinism

def test_clip_is_a_pure_function_of_seed_label_index():
    kw = dict(seconds=0.5, sample_rate=SR)
    a = synth.generate_clip(3, seed=7, index=4, **kw)
    synth.generate_clip(9, seed=7, index=0, **kw)  # other clips in between must not matter
    np.testing.assert_array_equal(a, synth.generate_clip(3, seed=7, index=4, **kw))
    for other in [dict(seed=7, index=5), dict(seed=8, index=4)]:
        assert not np.array_equal(a, synth.generate_clip(3, **other, **kw))
    assert not np.array_equal(a, synth.generate_clip(2, seed=7, index=4, **kw))


def test_generate_stacks_generate_clip_class_major():
    clips, labels = synth.generate(2, seconds=0.25, sample_rate=16000, seed=3)
    assert clips.shape == (20, 4000) and clips.dtype == np.float32
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 2))
    for r in range(20):
        want = synth.generate_clip(r // 2, seconds=0.25, sample_rate=16000, seed=3, index=r % 2)
        np.testing.assert_array_equal(clips[r], want)


# ---------------------------------------------------------------- ranges

@pytest.mark.parametrize("label", range(10))
@pytest.mark.parametrize("seconds, sample_rate", [(1.0, 22050), (0.3333, 22050), (0.77, 8000)])
def test_clip_shape_dtype_range_and_not_silent(label, seconds, sample_rate):
    x = synth.generate_clip(label, seconds=seconds, sample_rate=sample_rate, seed=0, index=label)
    assert x.shape == (round(seconds * sample_rate),) and x.dtype == np.float32
    assert np.all(np.isfinite(x)) and np.abs(x).max() <= 1.0
    assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) > 10 ** (-45 / 20)  # level is drawn from -38..-18 dBFS


def test_level_spread_hides_the_class():
    clips, y = _clips(tuple(range(10)), 12)
    db = 10 * np.log10(np.mean(clips.astype(np.float64) ** 2, axis=1))  # [clips] RMS level, dBFS
    assert db.max() - db.min() > 15  # levels vary over ~20 dB ...
    means = np.array([db[y == c].mean() for c in range(10)])
    assert means.max() - means.min() < 7  # ... and no class is much louder on average
    assert np.all(np.abs(clips).max(axis=1) <= 0.99 + 1e-6)


@pytest.mark.parametrize("kwargs", [dict(label=10), dict(label=-1), dict(label=True), dict(label=1.0),
                                    dict(seconds=0.0), dict(seconds=-1.0), dict(seconds=float("nan")),
                                    dict(seconds="1"), dict(sample_rate=4000), dict(sample_rate=22050.0),
                                    dict(seed=-1), dict(index=-2)])
def test_bad_input_raises_value_error_naming_the_argument(kwargs):
    args = dict(label=0, seconds=0.1, sample_rate=SR, seed=0, index=0) | kwargs
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        synth.generate_clip(args.pop("label"), **args)


def test_generate_rejects_bad_n_per_class():
    with pytest.raises(ValueError, match="n_per_class"):
        synth.generate(0, seconds=0.1)


# ---------------------------------------------------------------- what the classes are made of

@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_temporal_pairs_share_long_term_spectra_but_not_time_structure(pair):
    clips, y = _clips(pair, 40)
    long_term = np.stack([_long_term(x) for x in clips])
    assert _nearest_centroid(long_term, y) < 0.7  # ~chance: the averaged spectra look alike
    feature = globals()[PAIRS[pair]]
    timed = np.array([feature(x) for x in clips])
    assert _nearest_centroid(timed, y) > 0.9  # one number about how the clip unfolds tells them apart


def test_long_term_spectra_separate_everything_except_the_pairs():
    # the same feature and classifier that see no difference inside a pair do see the other classes apart
    clips, y = _clips(tuple(range(10)), 12)
    group = np.array([0, 1, 2, 2, 3, 3, 4, 4, 5, 6])[y]  # each temporal pair merged into one group
    assert _nearest_centroid(np.stack([_long_term(x) for x in clips]), group) > 0.75


def test_simple_features_beat_chance_on_ten_classes():
    clips, y = _clips(tuple(range(10)), 12)

    def features(x):  # band-energy mean and spread over time, plus onsets per second
        b = np.log(_bands(_power(x)) + 1e-20)
        b -= b.mean()
        flux = np.maximum(np.diff(b, axis=0), 0).sum(1)
        peaks = (flux[1:-1] > flux[:-2]) & (flux[1:-1] >= flux[2:]) & (flux[1:-1] > flux.mean() + flux.std())
        return np.concatenate([b.mean(0), b.std(0), [peaks.sum() / (len(x) / SR)]])

    assert _nearest_centroid(np.stack([features(x) for x in clips]), y) > 0.5  # chance is 0.1
