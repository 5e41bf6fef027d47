"""Feeding the devices: the K-steps-per-call plan, resident vs streamed data, and equal metrics for all."""

import json
import os

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SMOKE
from crnn_jax import config as config_lib
from crnn_jax.data import dataset as data_lib
from crnn_jax.training import feed as feed_lib
from crnn_jax.training import steps as steps_lib
from crnn_jax.training import loop


@settings(max_examples=60, deadline=None)
@given(start=st.integers(0, 50), length=st.integers(1, 80), k=st.integers(1, 9),
       bounds=st.lists(st.integers(1, 25), min_size=1, max_size=3))
def test_plan_covers_every_step_once_and_never_crosses_a_boundary(start, length, k, bounds):
    total = start + length
    chunks = feed_lib.plan(start, total, k, bounds)
    steps = [s for first, n in chunks for s in range(first, first + n)]
    assert steps == list(range(start, total))
    for first, n in chunks:
        assert 1 <= n <= k
        for b in bounds:  # a boundary multiple may only be the end of a chunk, never inside it
            assert not any((s + 1) % b == 0 for s in range(first, first + n - 1))


@pytest.mark.parametrize("speed_change,read", [(0.0, 300), (0.1, 331)])
def test_resident_and_streamed_feeds_give_the_same_crops(speed_change, read):
    """Both feeds cut the same crops; with a speed change they read ceil(crop (1 + d)) + 1 samples a crop."""
    rng = np.random.default_rng(0)
    lengths = np.array([900, 1000, 700, 1000])
    audio = rng.integers(-30000, 30000, (4, 1000)).astype(np.int16)
    ds = data_lib.Dataset(audio=audio, lengths=lengths, labels=np.array([0, 1, 0, 1], np.int32),
                          names=("a", "b", "c", "d"), class_names=("x", "y"), sample_rate=1000)
    cfg = config_lib.Config(sample_rate=1000, f_max=500.0, crop_seconds=0.3, batch_size=4, seed=3,
                            speed_change=speed_change)
    assert cfg.crop_samples == 300 and cfg.read_samples == read
    songs = np.arange(4)
    resident = feed_lib.ResidentFeed(ds, cfg, songs, 1)
    stream = feed_lib.StreamFeed(ds, cfg, songs, 1)
    chunks = [(0, 2), (2, 3)]
    for (s1, k1, b1), (s2, k2, b2) in zip(resident.calls(chunks), stream.calls(chunks)):
        assert (s1, k1) == (s2, k2)
        np.testing.assert_array_equal(b1["labels"], b2["labels"])
        np.testing.assert_array_equal(b1["gains"], b2["gains"])
        flat = lambda x: x.reshape(-1)
        crops = jax.jit(steps_lib.gather_on_device, static_argnums=3)(
            resident.audio, flat(b1["songs"]), flat(b1["offsets"]), read)
        np.testing.assert_array_equal(np.asarray(crops), b2["crops"].reshape(-1, read))
        assert b2["crops"].shape == (1, k2, 4, read)
        assert (flat(b1["offsets"]) + read <= lengths[flat(b1["songs"])]).all()  # every read inside its song


def test_k_steps_in_one_call_are_k_calls_of_one_step(tiny_train):
    """steps.make_multi_step (K training steps in one device call: a lax.scan, crops cut on the device from the
    resident data set) takes the steps K calls of conftest's plain train step take on the streamed feed's crops
    (which are the resident feed's, test above); the slow test below checks whole runs, both feeds."""
    cfg = tiny_train.cfg
    rng = np.random.default_rng(2)
    lengths = np.array([33075, 30000, 26000, 33075, 25000, 28000])  # 1.1 .. 1.5 s: crops at many offsets
    ds = data_lib.Dataset(audio=rng.integers(-8000, 8000, (6, 33075)).astype(np.int16), lengths=lengths,
                          labels=np.arange(6, dtype=np.int32) % 3, names=tuple("abcdef"), class_names=("x", "y", "z"),
                          sample_rate=cfg.sample_rate)
    s, losses = tiny_train.state, []
    for _, _, batch in feed_lib.StreamFeed(ds, cfg, np.arange(6), 1).calls([(0, 1), (1, 1), (2, 1)]):
        new, m = tiny_train.step()(s, jax.tree.map(lambda x: x[0, 0], batch))  # [devices, k, ...] -> the global batch
        s = jax.tree.map(lambda x: x[0], new)
        losses.append(float(m["loss"][0]))
    assert int(s.step) == 3 and len(set(losses)) == 3
    train_step = steps_lib.make_train_step(tiny_train.net(0.0), tiny_train.tx, head=cfg.head, seed=cfg.seed)
    k_steps = jax.jit(jax.vmap(steps_lib.make_multi_step(train_step, cfg.read_samples), in_axes=(None, None, 0),
                               axis_name=steps_lib.AXIS))
    feed = feed_lib.ResidentFeed(ds, cfg, np.arange(6), 1)
    [(step, k, batch)] = list(feed.calls([(0, 3)]))
    assert (step, k) == (0, 3) and "crops" not in batch  # indices only: the step cuts the crops
    new, m = k_steps(tiny_train.state, feed.audio, batch)
    np.testing.assert_allclose(np.asarray(m["loss"])[0], losses, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a)[0], b, rtol=1e-5, atol=1e-6), new, s)


def _metrics(wd):
    with open(os.path.join(wd, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f]


@pytest.mark.slow
def test_steps_per_call_and_placement_do_not_change_the_metrics(tmp_path):
    base = config_lib.load_preset(SMOKE).replace(
        dropout=0.0, max_steps=12, log_every=6, checkpoint_every=6)
    runs = {}
    for k, placement in [(1, "device"), (4, "device"), (4, "host")]:
        cfg = base.replace(steps_per_call=k, data_placement=placement, workdir=str(tmp_path / f"{k}{placement}"))
        loop.train(cfg, log=lambda *_: None)
        runs[(k, placement)] = _metrics(cfg.workdir)
    ref = runs[(1, "device")]
    assert any("eval_loss" in r for r in ref) and len([r for r in ref if "train_loss" in r]) >= 2
    # K=4 does not divide the log interval of 6 (calls of 4 and 2 steps), a deliberately awkward case.
    assert runs[(4, "device")] == ref
    assert runs[(4, "host")] == ref


def test_bad_placement_is_a_config_error():
    with pytest.raises(config_lib.ConfigError, match="--data-placement must be one of"):
        config_lib.Config(data_placement="gpu")


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_default_runs_make_calls_of_one_length(backend):
    # Every call the no-argument run makes has steps_per_call steps, so the K-step program compiles once.
    cfg = config_lib.default_config(backend)
    labels = np.repeat(np.arange(10), cfg.synth_clips_per_class)
    split = data_lib.random_split(labels, test_fraction=cfg.test_fraction, valid_fraction=cfg.valid_fraction,
                                  seed=cfg.seed)
    spe = data_lib.steps_per_epoch(len(split["train"]), cfg.batch_size)
    chunks = feed_lib.plan(0, cfg.epochs * spe, cfg.steps_per_call, [cfg.log_every, *loop.intervals(cfg, spe)])
    assert cfg.steps_per_call > 1 and {k for _, k in chunks} == {cfg.steps_per_call}
