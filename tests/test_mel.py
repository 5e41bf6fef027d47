"""Tests for crnn_jax.mel: HTK mel scale, filterbank, STFT mel spectrogram and dB, with librosa as oracle."""

import functools
import math

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crnn_jax import mel


def _audio(n_samples, sample_rate, *, seed=0, batch=()):
    """Two sines plus noise, float32 [*batch, n_samples]."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / sample_rate
    tone = 0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * 3150.0 * t)
    noise = 0.05 * rng.standard_normal((*batch, n_samples))
    return (tone + noise).astype(np.float32)


def _librosa_mel(y, *, sample_rate, n_fft, hop_length, n_mels, f_min=0.0, f_max=None, power=2.0,
                 center=True, pad_mode="constant"):
    """librosa's mel spectrogram, transposed to our time-major [n_frames, n_mels]."""
    return librosa.feature.melspectrogram(
        y=y, sr=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmin=f_min,
        fmax=f_max, power=power, center=center, pad_mode=pad_mode, htk=True, norm=None,
    ).T


# ----------------------------------------------------------------------------- mel scale

def test_hz_to_mel_golden_values():
    assert mel.hz_to_mel(0.0) == 0.0
    assert mel.hz_to_mel(700.0) == pytest.approx(2595.0 * math.log10(2.0), rel=1e-12)
    # The HTK scale is built so that 1000 Hz is (almost exactly) 1000 mel.
    assert abs(mel.hz_to_mel(1000.0) - 1000.0) < 0.02
    f = np.array([0.0, 20.0, 440.0, 8000.0, 11025.0])
    np.testing.assert_allclose(mel.hz_to_mel(f), librosa.hz_to_mel(f, htk=True), rtol=1e-12)
    np.testing.assert_allclose(mel.mel_to_hz(mel.hz_to_mel(f)), f, rtol=1e-12, atol=1e-9)


def test_mel_scale_accepts_jax_arrays():
    f = jnp.array([0.0, 440.0, 8000.0])
    m = mel.hz_to_mel(f)
    assert isinstance(m, jax.Array)
    np.testing.assert_allclose(np.asarray(m), mel.hz_to_mel(np.asarray(f)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(mel.mel_to_hz(m)), np.asarray(f), rtol=1e-4, atol=1e-2)


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=0.0, max_value=1e5, allow_nan=False))
def test_mel_round_trip(f):
    assert mel.mel_to_hz(mel.hz_to_mel(f)) == pytest.approx(f, rel=1e-9, abs=1e-9)
    assert mel.hz_to_mel(f) >= 0.0


# ----------------------------------------------------------------------------- filterbank

def test_filterbank_properties_default_config():
    cfg = mel.MelConfig()
    fb = cfg.filterbank()
    assert fb.shape == (cfg.n_fft // 2 + 1, cfg.n_mels) and fb.dtype == np.float32
    assert np.all(fb >= 0.0) and np.all(fb <= 1.0)
    assert np.all(fb.max(axis=0) > 0.0), "no empty filter at the default config"
    bin_hz = cfg.sample_rate / cfg.n_fft
    centres = mel.mel_to_hz(
        np.linspace(mel.hz_to_mel(cfg.f_min), mel.hz_to_mel(cfg.f_max), cfg.n_mels + 2))[1:-1]
    peak_hz = np.argmax(fb, axis=0) * bin_hz
    assert np.all(np.abs(peak_hz - centres) <= bin_hz)


@settings(max_examples=25, deadline=None)
@given(
    sample_rate=st.sampled_from([8000, 16000, 22050, 44100]),
    n_fft=st.integers(min_value=256, max_value=4096),
    n_mels=st.integers(min_value=1, max_value=64),
    lo=st.floats(min_value=0.0, max_value=0.3),
    hi=st.floats(min_value=0.5, max_value=1.0),
)
def test_filterbank_invariants(sample_rate, n_fft, n_mels, lo, hi):
    f_min, f_max = lo * sample_rate / 2, hi * sample_rate / 2
    try:
        fb = mel.mel_filterbank(sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, f_min=f_min, f_max=f_max)
    except ValueError as err:  # too many filters for this resolution is the only allowed failure
        assert "n_mels" in str(err) and "empty" in str(err)
        return
    assert fb.shape == (n_fft // 2 + 1, n_mels)
    assert np.all(fb >= 0.0) and np.all(fb <= 1.0) and np.all(fb.max(axis=0) > 0.0)
    assert np.all((fb > 0).sum(axis=1) <= 2), "a bin feeds at most two neighbouring triangles"
    # Neighbouring triangles cross-fade: between the first and last centre they sum to one.
    edges = mel.mel_to_hz(np.linspace(mel.hz_to_mel(f_min), mel.hz_to_mel(f_max), n_mels + 2))
    bins = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    inside = (bins >= edges[1]) & (bins <= edges[-2])
    np.testing.assert_allclose(fb[inside].sum(axis=1), 1.0, atol=1e-5)
    # Nothing outside [f_min, f_max] (up to the Hz -> mel -> Hz round trip of the end points).
    assert np.all(fb[(bins <= f_min) | (bins >= f_max)] <= 1e-6)


@pytest.mark.parametrize("sample_rate,n_fft,n_mels,f_min,f_max", [
    (22050, 1024, 96, 0.0, None),
    (22050, 2048, 128, 0.0, 11025.0),
    (16000, 512, 40, 20.0, 8000.0),
    (44100, 4096, 64, 50.0, 15000.0),
    (8000, 255, 20, 100.0, 3800.0),
])
def test_filterbank_matches_librosa(sample_rate, n_fft, n_mels, f_min, f_max):
    ours = mel.mel_filterbank(sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, f_min=f_min, f_max=f_max)
    ref = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max,
                              htk=True, norm=None).T
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- mel spectrogram

MEL_SETTINGS = [
    dict(sample_rate=22050, n_fft=1024, hop_length=512, n_mels=96),  # the default front end
    dict(sample_rate=22050, n_fft=1024, hop_length=512, n_mels=96, center=False),
    dict(sample_rate=22050, n_fft=1024, hop_length=256, n_mels=64, pad_mode="reflect"),
    dict(sample_rate=22050, n_fft=2048, hop_length=512, n_mels=128, power=1.0),
    dict(sample_rate=16000, n_fft=400, hop_length=160, n_mels=40, f_min=60.0, f_max=7000.0),
    dict(sample_rate=8000, n_fft=255, hop_length=64, n_mels=24, power=1.0, pad_mode="reflect"),
    dict(sample_rate=11025, n_fft=511, hop_length=100, n_mels=30, center=False, f_min=100.0),
    dict(sample_rate=16000, n_fft=512, hop_length=512, n_mels=40),  # hop == n_fft
]


@pytest.mark.parametrize("kw", MEL_SETTINGS, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_mel_spectrogram_matches_librosa(kw):
    y = _audio(12_345, kw["sample_rate"], seed=1)
    ours = np.asarray(mel.mel_spectrogram(y, **kw))
    ref = _librosa_mel(y, **kw)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    center = kw.get("center", True)
    assert ours.shape[0] == mel._n_frames(len(y), kw["n_fft"], kw["hop_length"], center)
    np.testing.assert_allclose(ours, ref, atol=1e-4 * ref.max(), rtol=0)


def test_batched_equals_per_example():
    kw = dict(sample_rate=16000, n_fft=512, hop_length=128, n_mels=40, f_min=30.0)
    y = _audio(4000, 16000, seed=2, batch=(2, 3))
    out = np.asarray(mel.mel_spectrogram(y, **kw))
    assert out.shape == (2, 3, mel._n_frames(4000, 512, 128, True), 40)
    for i in range(2):
        for j in range(3):
            single = np.asarray(mel.mel_spectrogram(y[i, j], **kw))
            np.testing.assert_allclose(out[i, j], single, rtol=1e-5, atol=1e-6 * single.max())


def test_log_mel_is_per_example_db_of_mel(monkeypatch):
    cfg = mel.MelConfig(n_mels=48, top_db=40.0)
    y = _audio(9000, cfg.sample_rate, seed=8, batch=(3,))
    y[1] *= 1e-3  # a quiet example must not be clipped against the loud ones
    expected = np.stack([
        np.asarray(mel.power_to_db(mel.mel_spectrogram(
            clip, sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
            f_min=cfg.f_min, f_max=cfg.f_max), top_db=cfg.top_db))
        for clip in y
    ])
    np.testing.assert_allclose(np.asarray(mel.log_mel_spectrogram(y, cfg)), expected, atol=1e-4)
    # The accelerator branch (whole batch at once instead of a loop over clips) computes the same.
    # disable_jit: the branch is chosen while tracing, and a cached CPU trace would hide it.
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with jax.disable_jit():
        np.testing.assert_allclose(np.asarray(mel.log_mel_spectrogram(y, cfg)), expected, atol=1e-4)


def test_log_mel_matches_librosa_single_clip_and_n_frames():
    cfg = mel.MelConfig()
    y = _audio(3 * cfg.sample_rate, cfg.sample_rate, seed=3)
    ours = np.asarray(mel.log_mel_spectrogram(y, cfg))
    power = _librosa_mel(y, sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                         n_mels=cfg.n_mels, f_min=cfg.f_min, f_max=cfg.f_max)
    ref = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=cfg.top_db)
    assert ours.shape == (cfg.n_frames(len(y)), cfg.n_mels)
    np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0)  # dB; float32 log10 of values up to ~1e5


def test_default_framing_has_no_gather():
    cfg = mel.MelConfig()
    jaxpr = str(jax.make_jaxpr(lambda a: mel.log_mel_spectrogram(a, cfg))(jnp.zeros((2, 22050))))
    assert "gather" not in jaxpr and "fft" in jaxpr


def test_gradients_are_finite_on_silence():
    # power=1 takes a square root of |X|**2, which has an infinite derivative at 0 unless guarded.
    f = functools.partial(mel.mel_spectrogram, sample_rate=8000, n_fft=256, hop_length=128, n_mels=16, power=1.0)
    grad = jax.grad(lambda a: f(a).sum())(jnp.zeros(1000))
    assert np.all(np.isfinite(np.asarray(grad)))
    cfg = mel.MelConfig()
    grad = jax.grad(lambda a: mel.log_mel_spectrogram(a, cfg).sum())(jnp.asarray(_audio(4096, 22050)))
    assert np.all(np.isfinite(np.asarray(grad))) and np.any(np.asarray(grad) != 0)


# ----------------------------------------------------------------------------- dB

@pytest.mark.parametrize("top_db", [None, 80.0, 30.0])
def test_power_to_db_matches_librosa_single_example(top_db):
    S = _librosa_mel(_audio(8000, 16000, seed=4), sample_rate=16000, n_fft=512, hop_length=256, n_mels=40)
    S[:, :3] = 0.0  # exercise the amin floor
    ours = np.asarray(mel.power_to_db(S, ref=1.0, amin=1e-10, top_db=top_db))
    ref = librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=top_db)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    ours = np.asarray(mel.power_to_db(S, ref=2.5, amin=1e-6, top_db=top_db))
    np.testing.assert_allclose(ours, librosa.power_to_db(S, ref=2.5, amin=1e-6, top_db=top_db), atol=1e-4)


def test_power_to_db_clips_per_example():
    rng = np.random.default_rng(5)
    quiet = rng.uniform(0.0, 1e-6, size=(20, 8)).astype(np.float32)
    loud = rng.uniform(0.0, 1e3, size=(20, 8)).astype(np.float32)
    alone = np.asarray(mel.power_to_db(quiet, top_db=20.0))
    batched = np.asarray(mel.power_to_db(np.stack([quiet, loud]), top_db=20.0))
    np.testing.assert_array_equal(batched[0], alone)
    for example in batched:  # each example spans at most top_db below its own maximum
        assert example.max() - example.min() <= 20.0 + 1e-4
    # librosa clips against the global maximum, which would have flattened the quiet example.
    assert np.ptp(librosa.power_to_db(np.stack([quiet, loud]), top_db=20.0)[0]) == 0.0


# ----------------------------------------------------------------------------- jit

def test_jit_matches_eager_and_traces_once():
    cfg = mel.MelConfig(n_mels=64)
    traces = []

    def featurise(audio):
        traces.append(audio.shape)  # a Python side effect runs only while tracing
        return mel.log_mel_spectrogram(audio, cfg)

    jitted = jax.jit(featurise)
    y = _audio(22050, 22050, seed=6, batch=(3,))
    out = jitted(y)
    np.testing.assert_allclose(np.asarray(out), np.asarray(mel.log_mel_spectrogram(y, cfg)), atol=1e-4)
    jitted(_audio(22050, 22050, seed=7, batch=(3,))).block_until_ready()
    assert len(traces) == 1
    # The config can also be a static argument: equal configs hash alike and reuse the trace.
    static = jax.jit(mel.log_mel_spectrogram, static_argnames="config")
    np.testing.assert_allclose(np.asarray(static(y, config=mel.MelConfig(n_mels=64))), np.asarray(out))
    assert hash(mel.MelConfig(n_mels=64)) == hash(cfg)


def test_melconfig_n_frames_and_defaults():
    cfg = mel.MelConfig()
    assert (cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.n_mels) == (22050, 1024, 512, 96)
    for n in [1, 511, 512, 513, 22050, 30 * 22050]:
        expected = 1 + (n + 2 * (cfg.n_fft // 2) - cfg.n_fft) // cfg.hop_length
        assert cfg.n_frames(n) == expected


# ----------------------------------------------------------------------------- bad input

BASE = dict(sample_rate=22050, n_fft=1024, hop_length=512, n_mels=96)


@pytest.mark.parametrize("change,match", [
    (dict(sample_rate=0), "sample_rate"),
    (dict(sample_rate=-16000), "sample_rate"),
    (dict(n_fft=0), "n_fft"),
    (dict(n_mels=0), "n_mels"),
    (dict(hop_length=0), "hop_length"),
    (dict(f_min=-1.0), "f_min"),
    (dict(f_max=12000.0), "f_max"),
    (dict(f_min=5000.0, f_max=4000.0), "f_min"),
    (dict(f_min=4000.0, f_max=4000.0), "f_min"),
    (dict(n_mels=512), "n_mels=512 leaves"),
    (dict(pad_mode="edge"), "pad_mode"),
    (dict(power=0.0), "power"),
])
def test_bad_arguments_raise(change, match):
    with pytest.raises(ValueError, match=match):
        mel.mel_spectrogram(np.zeros(4096, np.float32), **{**BASE, **change})


def test_bad_filterbank_and_config_raise():
    with pytest.raises(ValueError, match="f_max"):
        mel.mel_filterbank(sample_rate=16000, n_fft=512, n_mels=40, f_max=8001.0)
    with pytest.raises(ValueError, match="sample_rate"):
        mel.mel_filterbank(sample_rate=-1, n_fft=512, n_mels=40)
    with pytest.raises(ValueError, match=r"n_mels=512 leaves \d+ empty mel filters at n_fft=1024"):
        mel.MelConfig(n_mels=512)
    with pytest.raises(ValueError, match="f_max"):
        mel.MelConfig(sample_rate=16000)  # default f_max=11025 is above 8 kHz Nyquist
    with pytest.raises(ValueError, match="top_db"):
        mel.MelConfig(top_db=-1.0)
    with pytest.raises(ValueError, match="top_db"):
        mel.power_to_db(np.ones((3, 4)), top_db=-10.0)


def test_short_audio_without_centre_raises_eagerly_and_under_jit():
    f = functools.partial(mel.mel_spectrogram, **BASE, center=False)
    with pytest.raises(ValueError, match="n_fft=1024"):
        f(np.zeros(1000, np.float32))
    with pytest.raises(ValueError, match="audio has 1000 samples"):
        jax.jit(f)(jnp.zeros((2, 1000)))
    # With centring the same clip is fine: one padded frame.
    assert mel.mel_spectrogram(np.zeros(1000, np.float32), **BASE).shape == (2, 96)
