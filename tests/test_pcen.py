"""PCEN (crnn_jax/pcen.py) against librosa.pcen as oracle, its reason to exist (a steady gain per band is
normalised away), the front end's compression="pcen" end to end against librosa, and its config checks."""

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from crnn_jax import mel
from crnn_jax import model as model_lib
from crnn_jax import pcen
from crnn_jax.config import Config, ConfigError


def _spectrogram(seed, shape, scale):
    rng = np.random.default_rng(seed)
    return rng.random(shape) ** 4 * scale  # heavy-tailed, like a spectrogram: mostly small, a few peaks


def _ours(S_librosa_layout, **kw):
    """librosa's [..., bands, frames] -> ours [..., frames, bands] -> back."""
    out = pcen.pcen(np.swapaxes(S_librosa_layout, -1, -2).astype(np.float32), **kw)
    return np.swapaxes(np.asarray(out), -1, -2)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e6, 1e12])
@pytest.mark.parametrize("params", [
    {},  # librosa's defaults
    dict(gain=0.8, bias=10.0, power=0.25, time_constant=0.06, eps=1e-4),  # speech-like settings
    dict(gain=1.0, bias=0.5, power=1.0, time_constant=2.0),
])
def test_matches_librosa(scale, params):
    S = _spectrogram(0, (2, 40, 130), scale)
    ref = librosa.pcen(S, sr=16000, hop_length=256, **params)
    ours = _ours(S, sample_rate=16000, hop_length=256, **params)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=2e-6 * np.abs(ref).max())


def test_smoothing_coefficient_is_librosas_and_jits():
    t = 0.4 * 22050 / 512
    assert pcen.smoothing_coefficient(0.4, 22050, 512) == pytest.approx((np.sqrt(1 + 4 * t * t) - 1) / (2 * t * t))
    S = _spectrogram(1, (3, 64, 20), 1e6).astype(np.float32)
    jitted = jax.jit(lambda s: pcen.pcen(s, sample_rate=22050, hop_length=512))(S)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(pcen.pcen(S, sample_rate=22050, hop_length=512)),
                               rtol=1e-5, atol=1e-6)  # XLA fuses the jitted version differently (float32)


def test_a_steady_gain_per_band_is_normalised_away():
    """What PCEN is for: a recording chain that scales each band by its own constant (an EQ) changes the
    log-mel by that many dB for ever, but PCEN (gain 1) only until the smoother has forgotten its start."""
    S = (_spectrogram(2, (400, 16), 1e6) + 1.0).astype(np.float32)  # [frames, bands], above power_to_db's amin
    eq = np.logspace(-2, 2, 16).astype(np.float32)  # -20 dB .. +20 dB of power, one per band
    kw = dict(sample_rate=22050, hop_length=512, gain=1.0, eps=1e-12)
    plain, equalised = np.asarray(pcen.pcen(S, **kw)), np.asarray(pcen.pcen(S * eq, **kw))
    settled = slice(300, None)  # (1 - b)**300 < 1e-7 at b = 0.056: the initial state is forgotten
    np.testing.assert_allclose(equalised[settled], plain[settled], rtol=1e-3, atol=1e-4)
    assert np.abs(equalised[:5] - plain[:5]).max() > 0.1  # while M still remembers its start, it does not
    db = np.asarray(mel.power_to_db(S * eq, top_db=None)) - np.asarray(mel.power_to_db(S, top_db=None))
    np.testing.assert_allclose(db[settled], np.broadcast_to(10 * np.log10(eq), db[settled].shape), atol=1e-3)


def test_the_front_end_with_pcen_matches_librosa_end_to_end():
    c = mel.MelConfig(sample_rate=22050, n_mels=64, power=1.0, compression="pcen")
    t = np.arange(2 * c.sample_rate) / c.sample_rate
    y = (0.3 * np.sin(2 * np.pi * 440 * t) * (t % 0.5 < 0.25)  # a gated tone: onsets for PCEN to keep
         + 0.01 * np.random.default_rng(3).standard_normal(len(t))).astype(np.float32)
    ours = np.asarray(model_lib.compressed_mel(jnp.asarray(y[None]), c))[0]
    S = librosa.feature.melspectrogram(y=y, sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length,
                                       n_mels=c.n_mels, fmin=c.f_min, fmax=c.f_max, power=1.0, htk=True,
                                       norm=None, center=True, pad_mode="constant")
    ref = librosa.pcen(S * 2 ** 31, sr=c.sample_rate, hop_length=c.hop_length).T  # librosa's docs' scaling
    assert ours.shape == (c.n_frames(len(y)), c.n_mels)
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    db = np.asarray(model_lib.compressed_mel(jnp.asarray(y[None]), mel.MelConfig(n_mels=64, power=1.0)))[0]
    assert not np.allclose(db, ours)  # "db" is still the log-mel


def test_bad_compression_and_eq_with_pcen_are_one_line_config_errors():
    with pytest.raises(ConfigError, match=r"^compression must be one of db, pcen, got 'log'$"):
        Config(compression="log")
    with pytest.raises(ConfigError, match=r"^eq_db=6.0 adds dB to a log-mel; with compression=pcen use eq_db=0$"):
        Config(compression="pcen", eq_db=6.0)
    assert Config(compression="pcen").mel.compression == "pcen"


def test_a_model_with_pcen_trains_a_step_with_finite_numbers_and_a_changed_front_end():
    """A network on PCEN features: finite logits and gradients (the scan and the log1p/expm1 form are
    differentiable), and its input BatchNorm sees other numbers than the dB front end gives it. (The CNN: the
    front end is the same module in both models, and the GRU would only add compile time.)"""
    base = Config(model="cnn", conv_channels=(4, 8), freq_pools=(4, 4), time_pools=(2, 2), n_mels=32,
                  crop_seconds=1.0, power=1.0)
    audio = jnp.asarray(np.random.default_rng(4).uniform(-0.5, 0.5, (4, base.crop_samples)).astype(np.float32))
    stats = {}
    for compression in ("db", "pcen"):
        net = model_lib.build_model(base.replace(compression=compression), 10)
        variables = jax.jit(lambda x: net.init(jax.random.PRNGKey(0), x, train=False))(audio[:1])

        def loss(params):
            logits, updated = net.apply({"params": params, "batch_stats": variables["batch_stats"]}, audio,
                                        train=True, rngs={"dropout": jax.random.PRNGKey(1)}, mutable=["batch_stats"])
            return jnp.mean(logits ** 2), updated["batch_stats"]

        if compression == "pcen":  # the gradient through the PCEN scan (the dB front end's is test_model's)
            (value, batch_stats), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
            assert np.isfinite(float(value)) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
        else:
            _, batch_stats = jax.jit(loss)(variables["params"])
        stats[compression] = np.asarray(batch_stats["frontend"]["input_norm"]["mean"])
    assert stats["db"].shape == stats["pcen"].shape == (32,)
    assert np.all(stats["pcen"] < 0.1 * np.abs(stats["db"]))  # PCEN's O(1) values, not -100 .. 0 dB
