"""The PyTorch twin (crnn_jax/benchmarks/torch_reference.py) computes what crnn_jax computes: same log-mel, same
logits from shared weights, same training-mode forward, BatchNorm averages and Algorithm 8.6 steps.
Skipped without torch."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is optional (pip install torch); the twin needs it")

from crnn_jax import mel  # noqa: E402
from crnn_jax import model as M  # noqa: E402
from crnn_jax.training import steps  # noqa: E402
from crnn_jax.config import Config  # noqa: E402

from crnn_jax.benchmarks import torch_reference as TR  # noqa: E402


def audio(batch, samples, seed=0):
    """Noise and tones at very different levels, so the per-example top_db floor is active in some clips."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 22050.0
    x = 0.05 * rng.standard_normal((batch, samples)) + 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000, (batch, 1)) * t)
    x *= np.geomspace(1.0, 1e-3, batch)[:, None] * np.linspace(0.0, 1.0, samples)  # fade-in: quiet frames too
    return x.astype(np.float32)


def random_variables(net, samples, seed=0):
    """Variables of `net`'s shapes drawn with numpy (no init to compile): kernels ~ N(0, 1 / fan_in),
    biases, BatchNorm scales and running averages away from their init values, so every term counts."""
    shapes = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), jnp.zeros((1, samples)), train=False))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            return (rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(np.float32)
        if "scale" in name or "var" in name:
            return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
        return (0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)  # biases, running means

    return jax.tree_util.tree_map_with_path(draw, shapes)


def test_log_mel_matches():
    config = mel.MelConfig()
    x = audio(3, 22050 * 2)
    ours = np.asarray(mel.log_mel_spectrogram(x, config))
    theirs = TR.LogMel(config)(torch.from_numpy(x)).numpy()
    assert ours.shape == theirs.shape == (3, config.n_frames(x.shape[1]), config.n_mels)
    assert np.any(ours == ours.max(axis=(1, 2), keepdims=True) - config.top_db)  # the floor is exercised
    # 1e-4 dB, plus 1e-5 relative for the quietest bins (-100 dB): float32 FFT error is relative to the
    # loudest bin, so a bin 1e5 times quieter in power carries a larger relative error.
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("cfg", [pytest.param(Config(crop_seconds=3.0), marks=pytest.mark.slow),  # Choi's size
                                 Config(model="cnn", conv_channels=(8, 16, 16, 16), crop_seconds=1.0)],
                         ids=["crnn-choi", "cnn"])
def test_eval_logits_match_with_shared_weights(cfg):
    net = M.build_model(cfg, 10)
    v = random_variables(net, cfg.crop_samples)
    twin = TR.load_flax_variables(TR.build_torch_model(cfg, 10), v).eval()
    x = audio(2, cfg.crop_samples, seed=1)
    ours = np.asarray(jax.jit(lambda v, x: net.apply(v, x, train=False))(v, x))
    with torch.no_grad():
        theirs = twin(torch.from_numpy(x)).numpy()
    assert np.abs(ours).max() > 0.1  # not a degenerate all-zero comparison
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4 * np.abs(ours).max())


@pytest.mark.slow  # the fast tier checks the train step against Algorithm 8.6 in float64 (test_optim)
def test_one_training_step_matches():
    """Algorithm 8.6 in torch and in steps.make_train_step (dropout off): same loss, same new parameters,
    same BatchNorm running averages after two steps."""
    cfg = Config(conv_channels=(4, 8, 8, 8), gru_units=(6, 6), crop_seconds=1.0, dropout=0.0)
    net = M.build_model(cfg, 10, axis_name=steps.AXIS)
    tx = steps.make_optimizer(cfg, 10)
    start = random_variables(net, cfg.crop_samples, seed=4)
    state = steps.place_state(steps.TrainState(step=jnp.zeros((), jnp.int32), params=start["params"],
                                               batch_stats=start["batch_stats"], opt_state=tx.init(start["params"])))
    rng = np.random.default_rng(3)
    crops = (audio(4, cfg.crop_samples, seed=3) * 20000).astype(np.int16)
    gains = rng.uniform(0.5, 2.0, 4).astype(np.float32)
    labels = rng.integers(0, 10, 4).astype(np.int32)
    p_train = steps.parallel(steps.make_train_step(net, tx, head="softmax", seed=0), state_out=True)
    batch = {"crops": crops[None], "gains": gains[None], "labels": labels[None]}  # [1 device, ...]
    for _ in range(2):  # the second step takes its gradient at theta + alpha v with v != 0
        state, metrics = p_train(state, batch)

    twin = TR.load_flax_variables(TR.build_torch_model(cfg, 10), start)
    step = TR.TorchTrainStep(twin, learning_rate=cfg.learning_rate, decay=cfg.rms_decay, momentum=cfg.momentum,
                             eps=cfg.eps)
    for _ in range(2):
        loss, _ = step(torch.from_numpy(crops), torch.from_numpy(gains), torch.from_numpy(labels).long())
    np.testing.assert_allclose(loss.item(), float(metrics["loss"][0]), rtol=1e-4)  # train-mode forward
    # Running averages: flax's momentum m is torch's 1 - m. (torch's variance is unbiased: a factor
    # n / (n - 1) on each batch variance, n = 4 * 14 * 48 here, well inside rtol.)
    stats = state.batch_stats["convs"]["conv1"]["BatchNorm_0"]
    bn = twin.blocks[1][1]
    old_mean = start["batch_stats"]["convs"]["conv1"]["BatchNorm_0"]["mean"]
    assert np.abs(np.asarray(stats["mean"]) - old_mean).max() > 1e-3  # the averages did move
    np.testing.assert_allclose(bn.running_mean.numpy(), np.asarray(stats["mean"]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), np.asarray(stats["var"]), rtol=1e-3)

    build = lambda variables: dict(TR.load_flax_variables(TR.build_torch_model(cfg, 10), variables).named_parameters())
    initial, ours, theirs = build(start), build(jax.device_get({"params": state.params})), dict(twin.named_parameters())
    assert set(theirs) == set(ours)
    compared = 0
    for name, p in theirs.items():
        want, start_value = ours[name].detach().numpy(), initial[name].detach().numpy()
        moved = np.abs(want - start_value).max()  # the size of two updates
        np.testing.assert_allclose(p.detach().numpy(), want, rtol=0, atol=1e-2 * max(moved, 1e-9), err_msg=name)
        compared += 1
    assert compared >= 20
