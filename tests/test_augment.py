"""Augmentations (augment.py): shapes, exact identity when off, a function of (seed, step, example) only,
different across devices' shards, and the train step they run in (one device or two give the same losses)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crnn_jax.training import augment as A
from crnn_jax import config as config_lib
from crnn_jax import model as M
from crnn_jax.config import AugmentConfig

ON = AugmentConfig(spec_time_masks=2, spec_time_mask_frames=5, spec_freq_masks=2, spec_freq_mask_bins=10,
                   mixup_alpha=0.4, label_smoothing=0.1, eq_db=6.0)


# Jitted once each: op-by-op dispatch would compile every primitive separately.
_keys = jax.jit(A.example_keys, static_argnums=(0, 3))
spec_mask = jax.jit(A.spec_mask, static_argnums=(1, 2, 3))
eq_curve = jax.jit(A.eq_curve, static_argnums=(1, 2))
mixup = jax.jit(A.mixup, static_argnums=(2,))
speed_rates = jax.jit(A.speed_rates, static_argnums=(1,))
resample = jax.jit(A.resample, static_argnums=(2,))
soft_targets = jax.jit(A.soft_targets, static_argnums=(1, 2, 3))
soft_loss_fn = jax.jit(M.soft_loss_fn, static_argnums=(2,))
loss_fn = jax.jit(M.loss_fn, static_argnums=(2,))


def keys(step, first=0, n=8, seed=0):
    return _keys(seed, jnp.int32(step), jnp.int32(first), n)


def test_shapes_and_mask_properties():
    m = np.asarray(spec_mask(keys(3), 40, 32, ON))
    assert m.shape == (8, 40, 32) and m.dtype == bool
    time_masked = m.all(axis=2)  # [b, frames]: a time mask covers every band
    freq_masked = m.all(axis=1)  # [b, mels]
    assert np.array_equal(m, time_masked[:, :, None] | freq_masked[:, None, :])  # nothing else is masked
    assert (time_masked.sum(1) <= 2 * 5).all() and (freq_masked.sum(1) <= 2 * 10).all()
    assert time_masked.any() and freq_masked.any()
    eq = np.asarray(eq_curve(keys(3), 32, 6.0))
    assert eq.shape == (8, 32) and np.abs(eq).max() <= 6.0 and np.abs(eq).max() > 1.0
    # Piecewise linear between EQ_KNOTS knots: second differences vanish except next to the knots.
    knots = np.linspace(0, 31, A.EQ_KNOTS)
    bent = np.abs(np.diff(eq, 2, axis=1)) > 1e-4  # [b, 30]: index j is band j + 1
    near = np.array([np.min(np.abs(j + 1 - knots)) < 1.0 for j in range(30)])
    assert not bent[:, ~near].any()


def test_mixup_and_targets():
    audio = np.random.default_rng(1).standard_normal((7, 50)).astype(np.float32)
    mixed, p, lam = map(np.asarray, mixup(keys(0, n=7), audio, 0.4))  # numpy from here: no op-by-op jax
    assert mixed.shape == audio.shape and p.shape == lam.shape == (7,)
    np.testing.assert_array_equal(p, [1, 0, 3, 2, 5, 4, 6])  # pairs; the odd last one is its own partner
    assert ((lam >= 0) & (lam <= 1)).all()
    np.testing.assert_allclose(mixed, lam[:, None] * audio + (1 - lam[:, None]) * audio[p], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mixed[6], audio[6], rtol=1e-5, atol=1e-6)
    labels = np.array([0, 1, 2, 2, 3, 4, 5])
    t = soft_targets(labels, 10, "softmax", 0.1, p, lam)
    np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-6)
    expect0 = lam[0] * (0.9 * np.eye(10)[0] + 0.01) + (1 - lam[0]) * (0.9 * np.eye(10)[1] + 0.01)
    np.testing.assert_allclose(t[0], expect0, rtol=1e-5)
    np.testing.assert_allclose(soft_targets(labels, 10, "sigmoid", 0.2)[0], 0.8 * np.eye(10)[0] + 0.1, rtol=1e-6)
    # Off: exactly the one-hot labels, and the soft loss agrees with the integer-label loss.
    np.testing.assert_array_equal(soft_targets(labels, 10, "softmax", 0.0), np.eye(10)[labels])
    logits = np.random.default_rng(2).standard_normal((7, 10)).astype(np.float32)
    for head in ("softmax", "sigmoid"):
        np.testing.assert_allclose(soft_loss_fn(logits, np.eye(10, dtype=np.float32)[labels], head),
                                   loss_fn(logits, labels, head), rtol=1e-5)


def test_speed_change_plays_each_crop_at_its_rate():
    rates = np.asarray(speed_rates(keys(3, n=64), 0.1))
    assert rates.shape == (64,) and (rates >= 1 / 1.1 - 1e-6).all() and (rates <= 1.1 + 1e-6).all()
    assert (rates < 0.97).any() and (rates > 1.03).any()  # both ways: log-uniform around 1
    assert not np.array_equal(rates, np.asarray(speed_rates(keys(4, n=64), 0.1)))  # the next step draws anew
    np.testing.assert_array_equal(rates, np.asarray(speed_rates(keys(3, n=64), 0.1)))
    # A 440 Hz sine read at rate r is a sine at 440 r Hz: the spectral peak moves by the factor r.
    sr, n_out = 8000, 8000
    cfg = config_lib.Config(sample_rate=sr, f_max=4000.0, crop_seconds=1.0, speed_change=0.1)
    t = np.arange(cfg.read_samples) / sr
    audio = jnp.asarray(np.sin(2 * np.pi * 440.0 * t)[None].repeat(3, 0), jnp.float32)  # [3, read]
    r = jnp.array([1 / 1.1, 1.0, 1.1], jnp.float32)
    out = np.asarray(resample(audio, r, n_out))
    assert out.shape == (3, n_out)
    np.testing.assert_array_equal(out[1], np.asarray(audio[1, :n_out]))  # rate 1: the crop itself, exactly
    spec = np.abs(np.fft.rfft(out * np.hanning(n_out), axis=1))  # 1 Hz bins
    np.testing.assert_allclose(spec.argmax(1), 440.0 * np.asarray(r), atol=1.0)
    # Interpolation, not a nearest sample: at rate 1.1 the values lie on the sine at n * 1.1 / sr.
    np.testing.assert_allclose(out[2], np.sin(2 * np.pi * 440.0 * np.arange(n_out) * np.float32(1.1) / sr), atol=0.02)


def test_a_function_of_seed_step_and_example_only():
    same = [np.asarray(spec_mask(keys(5), 40, 32, ON)) for _ in range(2)]
    assert np.array_equal(*same)
    assert not np.array_equal(same[0], np.asarray(spec_mask(keys(6), 40, 32, ON)))  # the next step
    assert not np.array_equal(same[0], np.asarray(spec_mask(keys(5, seed=1), 40, 32, ON)))  # another seed
    # A device's shard [4, 8) draws what examples 4..7 of the whole batch draw, and not what shard [0, 4) draws.
    np.testing.assert_array_equal(spec_mask(keys(5, first=4, n=4), 40, 32, ON), same[0][4:])
    assert not np.array_equal(same[0][:4], same[0][4:])
    a = jnp.ones((8, 20))
    lam = [np.asarray(mixup(keys(s), a, 0.4)[2]) for s in (5, 5, 6)]
    assert np.array_equal(lam[0], lam[1]) and not np.array_equal(lam[0], lam[2])
    # Streams are separate: masks do not depend on whether mixup or EQ is on.
    only_masks = AugmentConfig(spec_time_masks=2, spec_time_mask_frames=5, spec_freq_masks=2, spec_freq_mask_bins=10)
    np.testing.assert_array_equal(spec_mask(keys(5), 40, 32, only_masks), same[0])


def test_off_is_exact_identity():
    assert not config_lib.Config().augment.active
    off = AugmentConfig(spec_time_masks=0, spec_time_mask_frames=8, spec_freq_masks=0, spec_freq_mask_bins=8)
    assert not off.active and not np.asarray(spec_mask(keys(1), 40, 32, off)).any()
    assert not np.asarray(eq_curve(keys(1), 32, 0.0)).any()
    audio = jnp.linspace(-0.5, 0.5, 3 * 200).reshape(3, 200)
    labels = jnp.array([0, 1, 2])
    out, targets, extra = A.apply(off, keys(1, n=3), audio, labels, n_classes=10, head="softmax",
                                  n_frames=5, n_mels=16, crop_samples=200)
    assert out is audio and targets is None and extra == {}
    # The front end given an all-False mask and 0 dB bands returns exactly what it returns without them.
    mc = M.mel.MelConfig(sample_rate=8000, n_fft=128, hop_length=64, n_mels=16, f_min=0.0, f_max=4000.0)
    fe = M.Frontend(mc)
    v = fe.init(jax.random.PRNGKey(0), audio, train=False)
    plain, _ = fe.apply(v, audio, train=True, mutable=["batch_stats"])
    frames = mc.n_frames(200)
    same, _ = fe.apply(v, audio, train=True, mutable=["batch_stats"], spec_mask=jnp.zeros((3, frames, 16), bool),
                       band_db=jnp.zeros((3, 16)))
    np.testing.assert_array_equal(plain, same)
    masked, _ = fe.apply(v, audio, train=True, mutable=["batch_stats"],
                         spec_mask=jnp.zeros((3, frames, 16), bool).at[:, :, 3].set(True))
    assert not np.asarray(masked[:, :, 3]).any() and np.array_equal(masked[:, :, 4], plain[:, :, 4])


@pytest.fixture(scope="module")
def tiny(tiny_train):
    """conftest's one-block CNN (the front end and the loss are what augmentations touch) and its first batch
    of 8: run(n_devices, settings, step=0) -> (state, loss) of one train step from the initial state at that
    step number, the batch split over n_devices simulated devices; each result computed once unless again=True."""
    done = {}

    def run(n_devices, aug, step=0, again=False):
        if again or (n_devices, aug, step) not in done:
            b = tiny_train.batch(0, read=aug is not None and aug.speed_change > 0)  # a speed change reads more
            new, metrics = tiny_train.step(aug, n_devices=n_devices)(tiny_train.state.replace(step=jnp.int32(step)), b)
            done[n_devices, aug, step] = jax.tree.map(lambda x: np.asarray(x[0]), new), float(metrics["loss"][0])
        return done[n_devices, aug, step]

    run.cfg = tiny_train.cfg
    run.on = dataclasses.replace(ON, speed_change=0.1)  # every augmentation
    return run


def test_train_step_off_is_the_plain_step_and_on_acts(tiny):
    plain_state, plain = tiny(1, None)
    off_state, off = tiny(1, tiny.cfg.augment)
    assert off == plain
    jax.tree.map(np.testing.assert_array_equal, off_state, plain_state)
    assert tiny(1, tiny.on)[1] != plain


@pytest.mark.slow  # one more augmented step to compile (~5 s); the fast tier has the one with everything on
def test_the_speed_change_acts_in_the_train_step_beside_the_others(tiny):
    plain = tiny(1, None)[1]
    assert tiny(1, ON)[1] != plain
    assert tiny(1, tiny.on)[1] not in (plain, tiny(1, ON)[1])  # the speed change acts in the step too


def test_the_train_step_draws_its_augmentations_from_seed_and_step(tiny):
    # Every augmentation on, dropout off: the same state at the same step draws the same masks, mixes, EQ
    # curves and rates (the same loss, computed again); at the next steps it draws others. The plain step's loss
    # does not depend on the step number at all (nothing else before the update reads it).
    loss = {s: tiny(1, tiny.on, step=s)[1] for s in (5, 6, 7)}
    assert tiny(1, tiny.on, step=5, again=True)[1] == loss[5]
    assert len(set(loss.values())) == 3
    assert len({tiny(1, None, step=s)[1] for s in (5, 6, 7)}) == 1


@pytest.mark.slow  # op by op (it checks that untouched audio is the very input array): ~5 s of compiling
def test_each_augmentation_acts_alone():
    audio = jnp.asarray(np.random.default_rng(1).standard_normal((8, 400)), jnp.float32)
    labels = jnp.arange(8)
    for field in ({"spec_time_masks": 2, "spec_time_mask_frames": 5}, {"spec_freq_masks": 2, "spec_freq_mask_bins": 10},
                  {"mixup_alpha": 0.4}, {"label_smoothing": 0.1}, {"eq_db": 6.0}, {"speed_change": 0.1}):
        s = AugmentConfig(**field)
        crop = 360 if s.speed_change else 400  # a speed change reads more than the crop it gives
        out, targets, extra = A.apply(s, keys(2), audio, labels, n_classes=10, head="softmax", n_frames=9, n_mels=32,
                                      crop_samples=crop)
        assert out.shape == (8, crop)
        changed = [name for name, on in (("audio", out is not audio), ("targets", targets is not None),
                                         ("spec_mask", "spec_mask" in extra), ("band_db", "band_db" in extra)) if on]
        want = {"spec_time_masks": ["spec_mask"], "spec_freq_masks": ["spec_mask"], "mixup_alpha": ["audio", "targets"],
                "label_smoothing": ["targets"], "eq_db": ["band_db"], "speed_change": ["audio"]}[next(iter(field))]
        assert changed == want, field
        if "spec_mask" in extra:
            assert extra["spec_mask"].shape == (8, 9, 32) and np.asarray(extra["spec_mask"]).any()


@pytest.mark.slow  # an augmented step on two devices to compile; the fast tier has the keys of a shard (above)
def test_one_or_two_devices_draw_the_same_augmentations(tiny):
    s1, l1 = tiny(1, tiny.on)
    s2, l2 = tiny(2, tiny.on)
    np.testing.assert_allclose(l2, l1, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), s2.params, s1.params)


@pytest.mark.parametrize("field,value", [("spec_time_masks", -1), ("spec_freq_mask_bins", 97), ("mixup_alpha", -0.1),
                                         ("label_smoothing", 1.0), ("eq_db", float("nan")), ("weight_decay", -1e-4),
                                         ("warmup_steps", -1), ("test_checkpoint", "first"), ("speed_change", 0.6),
                                         ("speed_change", -0.1),
                                         ("early_stop_patience", -2)])
def test_bad_values_are_one_line_config_errors(field, value):
    with pytest.raises(config_lib.ConfigError, match=field):
        config_lib.Config(**{field: value})
