"""The random low-pass augmentation (augment.lowpass_prob / lowpass_min_hz): what it removes and keeps, its
bounds, off when its field is 0, a function of (seed, step) that changes from step to step, in the train
step, and a killed-and-resumed run with it on ends with the metrics of an unbroken one."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from crnn_jax import config as config_lib
from crnn_jax.config import AugmentConfig, Config, ConfigError
from crnn_jax.training import augment as A
from crnn_jax.training import loop, runlog

SR = 22050
cutoffs = jax.jit(A.lowpass_cutoffs, static_argnums=(1, 2, 3))
lowpass = jax.jit(A.lowpass, static_argnums=(2,))


def keys(step, n=64, seed=0):
    return A.example_keys(seed, jnp.int32(step), jnp.int32(0), n)


def tones(n, freqs_hz, samples=SR):
    t = np.arange(samples) / SR
    x = sum(np.sin(2 * np.pi * f * t) for f in freqs_hz)
    return jnp.asarray(np.tile(x, (n, 1)), jnp.float32)  # [n, samples]


def test_cutoffs_are_bounded_and_drawn_with_the_probability():
    c = np.asarray(cutoffs(keys(3, n=4000), 0.3, 3000.0, SR))
    on = c < SR / 2
    assert c.shape == (4000,) and np.all(c >= 3000.0) and np.all(c <= SR / 2)
    assert abs(on.mean() - 0.3) < 0.03  # a share p of the crops is low-passed
    assert abs(np.median(np.log(c[on])) - np.log(np.sqrt(3000.0 * SR / 2))) < 0.1  # log-uniform: the geometric middle
    assert np.all(np.asarray(cutoffs(keys(3), 0.0, 3000.0, SR)) == SR / 2)  # p = 0: never


def test_removes_above_the_cutoff_and_keeps_below():
    x = tones(3, [500.0, 4000.0, 9000.0])
    y = np.asarray(lowpass(x, jnp.array([3000.0, 6000.0, SR / 2]), SR))
    spec = np.abs(np.fft.rfft(y, axis=-1)) / (SR / 2)  # 1 s of audio: bin k is k Hz, a sine's peak is 1
    assert np.allclose(spec[:, 500], 1.0, atol=1e-3)  # below every cutoff: kept
    assert spec[0, 4000] < 1e-4 and spec[0, 9000] < 1e-4  # cutoff 3 kHz: both upper tones gone
    assert abs(spec[1, 4000] - 1.0) < 1e-3 and spec[1, 9000] < 1e-4
    np.testing.assert_allclose(y[2], np.asarray(x[2]), atol=1e-4)  # the Nyquist cutoff leaves the crop as it is


def test_a_function_of_seed_and_step_that_changes_from_step_to_step():
    a, b, c = (np.asarray(cutoffs(keys(s), 0.5, 3000.0, SR)) for s in (7, 7, 8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a, np.asarray(cutoffs(keys(7, seed=1), 0.5, 3000.0, SR)))
    # Its own stream: turning it on changes no other augmentation's draws (here the random EQ's curve).
    x, labels = tones(64, [500.0]), jnp.arange(64) % 10
    kw = dict(n_classes=10, head="softmax", n_frames=44, n_mels=32, crop_samples=SR, sample_rate=SR)
    eq = A.apply(AugmentConfig(eq_db=6.0), keys(7), x, labels, **kw)[2]["band_db"]
    both = A.apply(AugmentConfig(eq_db=6.0, lowpass_prob=0.5), keys(7), x, labels, **kw)[2]["band_db"]
    assert np.array_equal(np.asarray(eq), np.asarray(both))


def test_off_is_identity_and_on_acts_in_apply():
    x = tones(8, [500.0, 9000.0])
    labels = jnp.arange(8)
    off = AugmentConfig()
    assert not off.active and AugmentConfig(lowpass_prob=0.5).active
    out, targets, extra = A.apply(off, keys(2, n=8), x, labels, n_classes=10, head="softmax", n_frames=44, n_mels=32,
                                  crop_samples=SR, sample_rate=SR)
    assert out is x and targets is None and extra == {}
    out, targets, extra = A.apply(AugmentConfig(lowpass_prob=1.0, lowpass_min_hz=3000.0), keys(2, n=8), x, labels,
                                  n_classes=10, head="softmax", n_frames=44, n_mels=32, crop_samples=SR,
                                  sample_rate=SR)
    assert out.shape == x.shape and targets is None and extra == {}
    spec = np.abs(np.fft.rfft(np.asarray(out), axis=-1)) / (SR / 2)
    c = np.asarray(cutoffs(keys(2, n=8), 1.0, 3000.0, SR))
    assert np.all((spec[:, 9000] < 1e-4) == (c < 9000.0))  # exactly the rows whose cutoff is below 9 kHz


@pytest.mark.parametrize("kw", [dict(lowpass_prob=-0.1), dict(lowpass_prob=1.5), dict(lowpass_min_hz=0.0),
                                dict(lowpass_prob=0.5, lowpass_min_hz=20000.0)])
def test_bad_values_are_one_line_config_errors(kw):
    with pytest.raises(ConfigError, match=list(kw)[-1]):
        Config(**kw)
    Config(sample_rate=1000, f_max=500.0, n_mels=8, n_fft=256, hop_length=64, freq_pools=(1, 1, 2, 2),
           spec_freq_mask_bins=0)  # off, the default minimum cutoff above a low Nyquist is no error


@pytest.mark.slow
def test_kill_and_resume_with_the_low_pass_on_is_bit_identical(tmp_path):
    """A run stopped after its checkpoint at step 4 and resumed to step 6 (constant schedule) writes exactly the
    metrics of a run of 6 steps: the low-pass draws are a function of (seed, step) alone."""
    base = config_lib.load_preset(os.path.join(ROOT, "experiments", "smoke.py")).replace(
        lowpass_prob=0.5, lowpass_min_hz=2000.0, checkpoint_every=2)
    whole = base.replace(workdir=str(tmp_path / "whole"), max_steps=6)
    loop.train(whole, log=lambda *_: None)
    parts = base.replace(workdir=str(tmp_path / "parts"), max_steps=4)
    loop.train(parts, log=lambda *_: None)
    loop.train(parts.replace(max_steps=6), log=lambda *_: None)
    rows = [runlog.read_rows(os.path.join(c.workdir, "metrics.jsonl")) for c in (whole, parts)]
    assert [r for r in rows[0] if "train_loss" in r] == [r for r in rows[1] if "train_loss" in r]
    assert len([r for r in rows[0] if "train_loss" in r]) == 6
