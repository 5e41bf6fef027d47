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
    return sum(x.size for x in jax.tree.leaves(tree))


def init(net, samples: int, batch: int = 2):
    return net.init(jax.random.PRNGKey(0), jnp.zeros((batch, samples)), train=False)


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
    variables = init(net, cfg.crop_samples, batch=1)
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
    variables = init(net, cfg.crop_samples, batch=3)
    out = net.apply(variables, jnp.ones((3, cfg.crop_samples)) * 0.1, train=False)
    assert out.shape == (3, 7) and out.dtype == jnp.float32
    # Frequency pools 2*3*4*4 = 96: 96 mels fold to exactly one band, so the GRU input is the channels.
    if kind == "crnn":
        kernel = variables["params"]["gru0"]["cell"]["ir"]["kernel"]
        assert kernel.shape[0] == 8


def test_dropout_is_the_only_randomness_and_eval_is_deterministic():
    cfg = Config(conv_channels=(4, 8, 8, 8), gru_units=(6, 6), crop_seconds=1.0)
    net = M.build_model(cfg, 10)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, cfg.crop_samples)) * 0.1
    v = init(net, cfg.crop_samples)
    a = net.apply(v, x, train=False)
    b = net.apply(v, x, train=False)
    np.testing.assert_array_equal(a, b)
    run = lambda k: net.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(k)}, mutable=["batch_stats"])[0]
    assert not np.allclose(run(0), run(1))  # dropout active in training
    no_drop = M.build_model(cfg.replace(dropout=0.0), 10)
    r = lambda k: no_drop.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(k)}, mutable=["batch_stats"])[0]
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


def test_bf16_keeps_float32_parameters_and_agrees_with_fp32():
    cfg = Config(conv_channels=(4, 8, 8, 8), gru_units=(6, 6), crop_seconds=1.0)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, cfg.crop_samples)) * 0.1
    f32 = M.build_model(cfg, 10)
    b16 = M.build_model(cfg.replace(precision="bf16"), 10)
    v = init(f32, cfg.crop_samples)
    assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(init(b16, cfg.crop_samples)))
    a, b = f32.apply(v, x, train=False), b16.apply(v, x, train=False)
    assert b.dtype == jnp.float32
    np.testing.assert_allclose(a, b, atol=0.1, rtol=0.1)


def test_gradients_reach_every_parameter():
    cfg = Config(conv_channels=(4, 8, 8, 8), gru_units=(6, 6), crop_seconds=1.0, dropout=0.0)
    net = M.build_model(cfg, 10)
    v = init(net, cfg.crop_samples, batch=4)
    x = jax.random.normal(jax.random.PRNGKey(3), (4, cfg.crop_samples)) * 0.1

    def loss(p):
        logits, _ = net.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(4)).mean()

    grads = jax.grad(loss)(v["params"])
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    dead = [jax.tree_util.keystr(k) for k, g in flat if not np.any(np.asarray(g))]
    assert not dead, f"no gradient reaches {dead}"


@pytest.mark.parametrize("shape", [(2, 9, 7, 1, 4), (3, 8, 6, 5, 3)])  # batch, t, f, c_in, c_out
def test_cpu_convolution_gradients_equal_xla(shape):
    # The hand-written backward pass (im2col kernel gradient, flipped-kernel input gradient) against
    # XLA's own derivative of the same convolution, through a non-linear loss so g is not constant.
    b, t, f, c_in, c_out = shape
    kx, kk, kw = jax.random.split(jax.random.PRNGKey(1), 3)
    x = jax.random.normal(kx, (b, t, f, c_in))
    k = jax.random.normal(kk, (3, 3, c_in, c_out))
    w = jax.random.normal(kw, (b, t, f, c_out))
    loss = lambda conv: lambda x, k: jnp.sum(jnp.tanh(conv(x, k)) * w)
    ref = jax.jit(jax.grad(loss(M._conv_same), argnums=(0, 1)))(x, k)
    for conv in (M._conv_same_cpu, M._conv_same_im2col):
        np.testing.assert_allclose(conv(x, k), M._conv_same(x, k), rtol=1e-5, atol=1e-5)
        ours = jax.jit(jax.grad(loss(conv), argnums=(0, 1)))(x, k)
        for a, r in zip(ours, ref):
            assert a.shape == r.shape
            np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5)


def test_cpu_convolution_rejects_what_it_does_not_implement():
    x, k = jnp.zeros((1, 4, 4, 1)), jnp.zeros((2, 2, 1, 1))
    with pytest.raises(ValueError, match="odd kernels"):
        M._conv_for_flax(x, k, (1, 1), "SAME")
    with pytest.raises(ValueError, match="stride 1"):
        M._conv_for_flax(x, jnp.zeros((3, 3, 1, 1)), (2, 2), "SAME")
