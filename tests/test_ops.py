"""ops.py: the CPU convolution kernels against XLA's, the pooling against flax's, and the one switch."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from crnn_jax import model as M
from crnn_jax import ops
from crnn_jax.config import Config


@pytest.fixture(autouse=True)
def _float32_arithmetic():
    """These are comparisons of float32 arithmetic: on a GPU, float32 convolutions and matrix products
    default to TF32 (10-bit mantissa), which would differ between the two kernel sets by ~1e-3."""
    with jax.default_matmul_precision("highest"):
        yield


@pytest.mark.parametrize("shape", [pytest.param((2, 9, 7, 1, 4), marks=pytest.mark.slow),  # the same code path
                                   (3, 8, 6, 5, 3)])  # batch, t, f, c_in, c_out
def test_cpu_convolution_gradients_equal_xla(shape):
    # The hand-written backward pass (im2col kernel gradient, flipped-kernel input gradient) against
    # XLA's own derivative of the same convolution, through a non-linear loss so g is not constant.
    b, t, f, c_in, c_out = shape
    rng = np.random.default_rng(1)  # numpy draws: op by op, jax.random would compile a program per shape
    x, k, w = (rng.standard_normal(s).astype(np.float32) for s in ((b, t, f, c_in), (3, 3, c_in, c_out),
                                                                   (b, t, f, c_out)))
    loss = lambda conv: lambda x, k: jnp.sum(jnp.tanh(conv(x, k)) * w)
    ref = jax.jit(jax.grad(loss(ops._conv_same), argnums=(0, 1)))(x, k)
    xla = jax.jit(ops._conv_same)(x, k)  # jitted, as in the model: op by op would compile every primitive alone
    for conv in (ops._conv_same_cpu, ops._conv_same_im2col):
        np.testing.assert_allclose(jax.jit(conv)(x, k), xla, rtol=1e-5, atol=1e-5)
        ours = jax.jit(jax.grad(loss(conv), argnums=(0, 1)))(x, k)
        for a, r in zip(ours, ref):
            assert a.shape == r.shape
            np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5)


def test_cpu_convolution_rejects_what_it_does_not_implement():
    x, k = jnp.zeros((1, 4, 4, 1)), jnp.zeros((2, 2, 1, 1))
    with pytest.raises(ValueError, match="odd kernels"):
        ops._conv_for_flax(x, k, (1, 1), "SAME")
    with pytest.raises(ValueError, match="stride 1"):
        ops._conv_for_flax(x, jnp.zeros((3, 3, 1, 1)), (2, 2), "SAME")


@pytest.mark.parametrize("shape,pool", [((2, 9, 7, 3), (2, 3)),  # windows that do not divide the input: fast tier
                                        pytest.param((1, 8, 8, 2), (4, 4), marks=pytest.mark.slow),
                                        pytest.param((2, 5, 6, 1), (1, 2), marks=pytest.mark.slow)])
def test_max_pool_equals_flax_values_and_gradient(shape, pool):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(np.float32)  # continuous: no ties, so one argmax per window
    ref = lambda x: nn.max_pool(x, pool, strides=pool)
    w = rng.standard_normal(jax.eval_shape(ref, x).shape).astype(np.float32)
    # Values and gradient of each in one jitted call (op by op would compile every primitive alone).
    both = lambda f: jax.jit(lambda x: (f(x), jax.grad(lambda x: jnp.sum(f(x) * w))(x)))(x)
    (ours, g_ours), (theirs, g_theirs) = both(lambda x: ops.max_pool(x, pool)), both(ref)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(g_ours, g_theirs)


def test_switch_resolves_use_then_environment_then_backend(monkeypatch):
    monkeypatch.delenv(ops.ENV, raising=False)
    auto = "cpu" if jax.default_backend() == "cpu" else "xla"
    assert ops.conv_impl() == auto
    monkeypatch.setenv(ops.ENV, "xla")
    assert ops.conv_impl() == "xla"
    monkeypatch.setenv(ops.ENV, "CPU")
    assert ops.conv_impl() == "cpu"
    with ops.use("xla"):
        assert ops.conv_impl() == "xla" and ops.conv_general_dilated_for() is jax.lax.conv_general_dilated
        with ops.use("auto"):
            assert ops.conv_impl() == auto
        assert ops.conv_impl() == "xla"
    assert ops.conv_impl() == "cpu" and ops.conv_general_dilated_for() is ops._conv_for_flax
    with pytest.raises(RuntimeError), ops.use("xla"):
        raise RuntimeError  # the switch is restored when the block fails
    assert ops.conv_impl() == "cpu"


def test_bad_switch_values_name_the_problem(monkeypatch):
    monkeypatch.setenv(ops.ENV, "gpu")
    with pytest.raises(ValueError, match=r"^CRNN_JAX_OPS must be one of auto, cpu, xla, got 'gpu'$"):
        ops.conv_impl()
    with pytest.raises(ValueError, match=r"ops.use\(\) must be one of"):
        with ops.use("fast"):
            pass


def _small_cnn():
    # A two-block CNN: the conv blocks the switch acts on (the first one's convolution and every kernel
    # gradient), without the GRUs it does not touch, at a fraction of the compile time.
    cfg = Config(model="cnn", conv_channels=(4, 8), freq_pools=(8, 12), time_pools=(2, 2), crop_seconds=1.0,
                 dropout=0.0)
    net = M.build_model(cfg, 10)
    x = (np.random.default_rng(3).standard_normal((4, cfg.crop_samples)) * 0.1).astype(np.float32)
    v = jax.jit(lambda k, x: net.init(k, x, train=False))(jax.random.PRNGKey(0), x)
    return net, v, x


def _loss_and_grads(net, v, x):
    """Built (and jitted) anew on each call, so it is traced under the switch in force."""
    def loss(p):
        logits, _ = net.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(4)).mean(), logits

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(v["params"])


def test_the_switch_changes_the_program_but_not_the_numbers():
    net, v, x = _small_cnn()
    apply = lambda p: net.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=True,
                                mutable=["batch_stats"])[0].sum()
    backward = {}
    for impl in ("cpu", "xla"):
        with ops.use(impl):
            backward[impl] = str(jax.make_jaxpr(jax.grad(apply))(v["params"]))
    # "cpu": the first block's convolution and every kernel gradient become matrix products.
    assert backward["xla"].count("conv_general_dilated") > backward["cpu"].count("conv_general_dilated")
    assert backward["cpu"].count("dot_general") > backward["xla"].count("dot_general")
    with ops.use("cpu"):
        (loss_c, logits_c), grads_c = _loss_and_grads(net, v, x)
    with ops.use("xla"):
        (loss_x, logits_x), grads_x = _loss_and_grads(net, v, x)
    np.testing.assert_allclose(logits_x, logits_c, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loss_x, loss_c, rtol=1e-5)
    flat_c = jax.tree_util.tree_flatten_with_path(grads_c)[0]
    for (path, gc), gx in zip(flat_c, jax.tree.leaves(grads_x)):
        name = jax.tree_util.keystr(path)
        if "Conv_0']['bias" in name:  # a bias before BatchNorm cancels: its gradient is 0 up to rounding
            assert float(jnp.abs(gc).max()) < 1e-6 and float(jnp.abs(gx).max()) < 1e-6, name
            continue
        err = float(jnp.linalg.norm(gx - gc) / jnp.linalg.norm(gc))
        assert err < 1e-4, f"{name}: relative gradient difference {err:.1e}"
