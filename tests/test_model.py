"""The networks: exact parameter count, pooling choices, shapes, heads, precision."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from crnn_jax import mel
from crnn_jax import model as M
from crnn_jax.config import Config


def n_params(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def init(net, samples: int):
    # Jitted, and on one example whatever the batch (the variables do not depend on it), so the tests of one
    # network share the compiled init: flax run op by op compiles every primitive on its own, many times slower.
    return jax.jit(lambda k, x: net.init(k, x, train=False))(jax.random.PRNGKey(0), jnp.zeros((1, samples)))


def noise(seed: int, shape) -> np.ndarray:
    """Audio-like input, float32 N(0, 0.1^2), drawn with numpy (jax.random op by op compiles per shape)."""
    return (np.random.default_rng(seed).standard_normal(shape) * 0.1).astype(np.float32)


def shapes(net, samples: int, batch: int = 1):
    """The variables' shapes (jax.eval_shape: traced, never computed): all that a count needs."""
    return jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), jnp.zeros((batch, samples)), train=False))


def test_crnn_parameter_count_is_choi_size():
    # Counted by hand, layer by layer, for Choi et al.'s CRNN on 96 mels (flax's GRUCell: input kernels
    # with bias for r, z, n; hidden kernels without bias for r, z and with bias for n).
    # No conv bias: the BatchNorm right after it subtracts the mean and has its own offset.
    conv = sum(9 * cin * cout for cin, cout in [(1, 64), (64, 128), (128, 128), (128, 128)])
    bn = 2 * 96 + 2 * (64 + 128 + 128 + 128)  # scale and bias: input norm over mels, then one per block
    gru = lambda cin, h: 3 * (cin * h + h) + 3 * h * h + h
    expected = conv + bn + gru(128, 32) + gru(32, 32) + (32 * 10 + 10)
    cfg = Config(crop_seconds=29.0)
    net = M.build_model(cfg, 10)
    variables = shapes(net, cfg.crop_samples)
    assert n_params(variables["params"]) == expected == 392_394
    # BatchNorm running statistics are state, not parameters.
    assert n_params(variables["batch_stats"]) == 2 * 96 + 2 * (64 + 3 * 128)


@pytest.mark.parametrize("seconds,expected", [(29.0, (2, 3, 4, 4)), (30.0, (2, 3, 4, 4)), (3.0, (2, 2, 2, 2))])
def test_time_pools(seconds, expected):
    cfg = Config(crop_seconds=seconds)
    pools = M.time_pools_of(cfg)
    assert pools == expected
    n_frames = mel.MelConfig().n_frames(cfg.crop_samples)
    assert n_frames // math.prod(pools) >= 8  # the GRU sees a sequence


def test_auto_time_pools_properties():
    for n_frames in [10, 44, 130, 260, 700, 1292, 5000]:
        pools = M.auto_time_pools(n_frames, 8)
        assert all(1 <= p <= b for p, b in zip(pools, M.CHOI_TIME_POOLS))
        assert n_frames // math.prod(pools) >= min(8, n_frames)
    assert M.auto_time_pools(5000, 8) == M.CHOI_TIME_POOLS


@pytest.mark.parametrize("kind", ["crnn", "cnn"])
def test_output_shapes_and_collapse(kind):
    cfg = Config(model=kind, conv_channels=(4, 8, 8, 8), gru_units=(6, 6), crop_seconds=1.0)
    net = M.build_model(cfg, 7)
    variables = shapes(net, cfg.crop_samples, batch=3)  # shapes are all this test reads: traced, not run
    out = jax.eval_shape(lambda v, x: net.apply(v, x, train=False), variables, jnp.ones((3, cfg.crop_samples)))
    assert out.shape == (3, 7) and out.dtype == jnp.float32
    # Frequency pools 2*3*4*4 = 96: 96 mels fold to exactly one band, so the GRU input is the channels.
    if kind == "crnn":
        kernel = variables["params"]["gru0"]["cell"]["ir"]["kernel"]
        assert kernel.shape[0] == 8


def test_dropout_is_the_only_randomness_and_eval_is_deterministic():
    # A one-block CNN: a conv block's and the head's dropout are every dropout the CRNN has too (its GRUs draw
    # nothing), at a fraction of the compile time.
    cfg = Config(model="cnn", conv_channels=(4,), freq_pools=(4,), time_pools=(2,), n_mels=32, crop_seconds=1.0)
    net = M.build_model(cfg, 10)
    x = noise(1, (4, cfg.crop_samples))
    v = init(net, cfg.crop_samples)
    evaluate = jax.jit(lambda v, x: net.apply(v, x, train=False))
    a = evaluate(v, x)
    b = evaluate(v, x)
    np.testing.assert_array_equal(a, b)

    def train_mode(model):
        f = jax.jit(lambda v, x, k: model.apply(v, x, train=True, rngs={"dropout": k}, mutable=["batch_stats"])[0])
        return lambda k: f(v, x, jax.random.PRNGKey(k))

    run = train_mode(net)
    assert not np.allclose(run(0), run(1))  # dropout active in training
    r = train_mode(M.build_model(cfg.replace(dropout=0.0), 10))
    np.testing.assert_array_equal(r(0), r(1))  # --dropout 0 disables every dropout


def test_heads_losses_match_definitions():
    logits = jnp.array([[2.0, -1.0, 0.5], [0.0, 0.3, -2.0]])
    labels = jnp.array([0, 2])
    ce = M.loss_fn(logits, labels, "softmax")
    ref = -jax.nn.log_softmax(logits)[jnp.arange(2), labels]
    np.testing.assert_allclose(ce, ref, rtol=1e-6)
    bce = M.loss_fn(logits, labels, "sigmoid")
    y = np.eye(3)[np.array(labels)]
    p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    ref = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(-1)
    np.testing.assert_allclose(bce, ref, rtol=1e-5)
    lp = M.log_probs(logits, "sigmoid")
    np.testing.assert_allclose(np.exp(lp), p, rtol=1e-5)
    np.testing.assert_allclose(np.exp(M.log_probs(logits, "softmax")).sum(-1), 1.0, rtol=1e-6)


@pytest.mark.slow  # bf16 convolutions compile slowly on a CPU, where fp32 is what runs
def test_bf16_keeps_float32_parameters_and_agrees_with_fp32():
    # A CRNN of two conv blocks and one GRU: every layer kind that takes the bf16 dtype, at less compile time.
    cfg = Config(conv_channels=(4, 8), freq_pools=(8, 12), time_pools=(2, 2), gru_units=(6,), crop_seconds=1.0)
    x = noise(2, (2, cfg.crop_samples))
    f32 = M.build_model(cfg, 10)
    b16 = M.build_model(cfg.replace(precision="bf16"), 10)
    v = init(f32, cfg.crop_samples)
    assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(shapes(b16, cfg.crop_samples)))
    a, b = (jax.jit(lambda v, x: net.apply(v, x, train=False))(v, x) for net in (f32, b16))
    assert b.dtype == jnp.float32
    np.testing.assert_allclose(a, b, atol=0.1, rtol=0.1)


def test_gradients_reach_every_parameter():
    # The bf16 test's small CRNN (two conv blocks, a GRU): every kind of parameter the network has.
    cfg = Config(conv_channels=(4, 8), freq_pools=(8, 12), time_pools=(2, 2), gru_units=(6,), crop_seconds=1.0,
                 dropout=0.0)
    net = M.build_model(cfg, 10)
    v = init(net, cfg.crop_samples)
    x = noise(3, (4, cfg.crop_samples))

    def loss(p):
        logits, _ = net.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(4)).mean()

    grads = jax.jit(jax.grad(loss))(v["params"])
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    dead = [jax.tree_util.keystr(k) for k, g in flat if not np.any(np.asarray(g))]
    assert not dead, f"no gradient reaches {dead}"
