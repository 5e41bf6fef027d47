"""On a GPU: the model's forward pass, its gradients and one pmapped training step agree with the CPU's.

Skipped (with the reason) where JAX sees no GPU, as in CI; experiments/gpu/run.sh runs it on a lent GPU.
The CPU side uses the "cpu" kernels of ops.py, the GPU side XLA's own, so this also checks the two kernel
sets against each other across backends. At precision "highest" float32 agrees to ~1e-6 relative; at the
GPU's default precision (TF32 convolutions and matrix products, 10-bit mantissa) to ~1e-3.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from crnn_jax import model as M
from crnn_jax import ops
from crnn_jax.training import steps
from crnn_jax.config import Config


def _gpus():
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not _gpus(), reason="no GPU visible to JAX (these tests compare GPU with CPU)")]

CFG = Config(conv_channels=(8, 16, 16, 16), gru_units=(8, 8), crop_seconds=1.0, dropout=0.0, batch_size=4)


def _setup():
    net = M.build_model(CFG, 10)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (4, CFG.crop_samples)) * 0.1)
    v = jax.device_get(net.init(jax.random.PRNGKey(0), x, train=False))
    return net, v, x


def _run(device, impl, precision, net, v, x):
    """(logits [4, 10], loss gradients) computed on `device` with ops kernels `impl`."""
    def loss(p, x):
        logits, _ = net.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(4)).mean(), logits

    with ops.use(impl), jax.default_matmul_precision(precision):
        f = jax.jit(jax.value_and_grad(loss, has_aux=True))
        (_, logits), grads = f(jax.device_put(v["params"], device), jax.device_put(x, device))
    return jax.device_get(logits), jax.device_get(grads)


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / max(np.linalg.norm(np.asarray(b)), 1e-30))


@pytest.mark.parametrize("precision,tol", [("highest", 1e-4), ("default", 2e-2)])
def test_forward_and_gradients_agree_with_the_cpu(precision, tol):
    net, v, x = _setup()
    cpu_logits, cpu_grads = _run(jax.devices("cpu")[0], "cpu", "highest", net, v, x)
    gpu_logits, gpu_grads = _run(_gpus()[0], "auto", precision, net, v, x)
    assert ops.conv_impl() == "xla"  # "auto" on a GPU process: XLA's kernels
    assert _rel(gpu_logits, cpu_logits) < tol
    flat = jax.tree_util.tree_flatten_with_path(cpu_grads)[0]
    for (path, gc), gg in zip(flat, jax.tree.leaves(gpu_grads)):
        name = jax.tree_util.keystr(path)
        if "Conv_0']['bias" in name:  # before BatchNorm: zero up to rounding on both
            assert np.abs(gg).max() < 1e-5, name
            continue
        assert _rel(gg, gc) < tol, f"{name}: {_rel(gg, gc):.1e}"


def test_one_training_step_agrees_with_the_cpu():
    net = M.build_model(CFG, 10, axis_name=steps.AXIS)
    tx = steps.make_optimizer(CFG, 10)
    rng = np.random.default_rng(0)
    batch = {"crops": rng.integers(-3000, 3000, (1, 1, 4, CFG.crop_samples)).astype(np.int16),
             "gains": np.ones((1, 1, 4), np.float32), "labels": rng.integers(0, 10, (1, 1, 4)).astype(np.int32)}
    out = {}
    for name, device in (("cpu", jax.devices("cpu")[0]), ("gpu", _gpus()[0])):
        with jax.default_device(device), jax.default_matmul_precision("highest"):
            state = steps.create_state(net, tx, CFG.crop_samples, seed=0)
            p = jax.pmap(steps.make_multi_step(steps.make_train_step(net, tx, head="softmax", seed=0), CFG.crop_samples),
                         axis_name=steps.AXIS, in_axes=(None, None, 0), out_axes=(None, 0), devices=[device])
            new, metrics = p(state, jnp.zeros((1, 1), jnp.int16), batch)
            out[name] = jax.device_get((new.params, metrics["loss"]))
    assert _rel(out["gpu"][1], out["cpu"][1]) < 1e-4  # the loss
    flat = jax.tree_util.tree_flatten_with_path(out["cpu"][0])[0]
    for (path, b), a in zip(flat, jax.tree.leaves(out["gpu"][0])):
        name = jax.tree_util.keystr(path)
        # Algorithm 8.6's first step is ~ -lr sign(g) sqrt(10): a conv bias before BatchNorm has g = 0 up to
        # rounding, so its sign, and the step, is noise on either backend.
        if "Conv_0']['bias" not in name:
            assert _rel(a, b) < 1e-3, f"{name}: {_rel(a, b):.1e}"
