"""Tests for crnn_jax.optim: Algorithm 8.6 against a line-for-line numpy transcription of the book."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax.core import FrozenDict

from crnn_jax.optim import (BookNesterovState, ScaleByBookRmsState, book_params, interim_params,
                            rmsprop_nesterov)

SHAPES = {"w": (3, 4), "b": (4,), "s": ()}
_RNG = np.random.default_rng(0)
CURV = {k: _RNG.uniform(0.5, 3.0, s) for k, s in SHAPES.items()}   # per-element curvature h
FREQ = {k: _RNG.uniform(1.0, 4.0, s) for k, s in SHAPES.items()}   # per-element sine frequency
THETA0 = {k: _RNG.normal(0.0, 1.5, s) for k, s in SHAPES.items()}
COUPLE = 0.3


def loss_jnp(p):
    """Nonconvex, couples leaves: Σ ½ h x² + sin(ω x) + ½ c (Σw − Σb)²."""
    total = sum(jnp.sum(0.5 * CURV[k] * p[k] ** 2 + jnp.sin(FREQ[k] * p[k])) for k in SHAPES)
    return total + 0.5 * COUPLE * (jnp.sum(p["w"]) - jnp.sum(p["b"])) ** 2


def grad_np(p):
    """Analytic gradient of loss_jnp in float64 numpy (independent of jax.grad)."""
    g = {k: CURV[k] * p[k] + FREQ[k] * np.cos(FREQ[k] * p[k]) for k in SHAPES}
    d = COUPLE * (np.sum(p["w"]) - np.sum(p["b"]))
    g["w"] = g["w"] + d
    g["b"] = g["b"] - d
    return g


def book_algorithm_8_6(theta, grad, lr, rho, alpha, delta, steps):
    """Algorithm 8.6 transcribed line for line in float64; returns θ after each step.

    lr: ε, a float or a function of the 0-based step. delta: δ inside the square root (0 = the book exactly).
    """
    theta = {k: np.array(x, np.float64) for k, x in theta.items()}   # Require: initial parameter θ
    v = {k: np.zeros_like(x) for k, x in theta.items()}              # Require: initial velocity v
    r = {k: np.zeros_like(x) for k, x in theta.items()}              # Initialize accumulation variable r = 0
    out = []
    for t in range(steps):                                           # while stopping criterion not met
        eps_t = lr(t) if callable(lr) else lr
        theta_tilde = {k: theta[k] + alpha * v[k] for k in theta}    # θ̃ ← θ + αv
        g = grad(theta_tilde)                                        # g ← ∇_θ̃ L
        r = {k: rho * r[k] + (1 - rho) * g[k] * g[k] for k in r}     # r ← ρr + (1 − ρ) g ⊙ g
        v = {k: alpha * v[k] - (eps_t / np.sqrt(delta + r[k])) * g[k] for k in v}  # v ← αv − ε/√r ⊙ g
        theta = {k: theta[k] + v[k] for k in theta}                  # θ ← θ + v
        out.append(theta)
    return out


def make_step(tx, loss, counter=None):
    """The training step as train.py writes it: gradient at the interim point, then the book update."""
    def step(params, opt_state):
        if counter is not None:
            counter.append(1)   # runs only while tracing
        grads = jax.grad(loss)(interim_params(params, opt_state))
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state
    return jax.jit(step)


def run_jax(tx, params, steps, loss=loss_jnp):
    step = make_step(tx, loss)
    state = tx.init(params)
    out = []
    for _ in range(steps):
        params, state = step(params, state)
        out.append(jax.tree.map(np.asarray, params))
    return out


def assert_trajectories_close(got, want, rtol, atol):
    assert len(got) == len(want)
    for t, (a, b) in enumerate(zip(got, want)):
        for k in SHAPES:
            np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=f"step {t}, leaf {k}")


HYPER = dict(learning_rate=0.05, decay=0.9, momentum=0.9)
STEPS = 25


@pytest.mark.parametrize("eps", [0.0, 1e-2])
def test_trajectory_matches_book_float64(eps):
    want = book_algorithm_8_6(THETA0, grad_np, HYPER["learning_rate"], HYPER["decay"], HYPER["momentum"],
                              eps, STEPS)
    x64_before = jax.config.jax_enable_x64
    with jax.enable_x64(True):
        params = {k: jnp.asarray(x, jnp.float64) for k, x in THETA0.items()}
        got = run_jax(rmsprop_nesterov(**HYPER, eps=eps), params, STEPS)
    assert jax.config.jax_enable_x64 == x64_before   # x64 must not leak into other tests
    assert all(a[k].dtype == np.float64 for a in got for k in SHAPES)
    assert_trajectories_close(got, want, rtol=1e-12, atol=1e-13)
    if eps > 0:
        # δ outside the square root (1/(√r + δ)) would give a clearly different trajectory: placement is tested.
        outside = book_algorithm_8_6(THETA0, grad_np, HYPER["learning_rate"], HYPER["decay"], HYPER["momentum"],
                                     0.0, STEPS)
        assert max(np.max(np.abs(outside[-1][k] - got[-1][k])) for k in SHAPES) > 1e-4


def loss_np(p):
    """loss_jnp in float64 numpy."""
    total = sum(np.sum(0.5 * CURV[k] * p[k] ** 2 + np.sin(FREQ[k] * p[k])) for k in SHAPES)
    return total + 0.5 * COUPLE * (np.sum(p["w"]) - np.sum(p["b"])) ** 2


class LossNet(nn.Module):
    """A "network" for steps.make_train_step whose training loss is softplus(loss_jnp(params)): logits
    [[loss, 0]] against label 1. It ignores its audio; one dummy BatchNorm statistic keeps the step's state whole."""

    n_classes: int = 2
    axis_name: str | None = None  # what steps.create_state clones away; nothing here reduces over devices

    @nn.compact
    def __call__(self, audio, train=False):
        p = {k: self.param(k, lambda _, k=k: jnp.asarray(THETA0[k], jnp.float32)) for k in SHAPES}
        self.variable("batch_stats", "seen", lambda: jnp.zeros(()))
        return jnp.broadcast_to(jnp.stack([loss_jnp(p), 0.0]), (audio.shape[0], 2))


def test_the_train_step_takes_the_gradient_at_the_interim_point():
    """steps.make_train_step (what training runs) on LossNet follows Algorithm 8.6 in float64, whose gradient
    is taken at theta + alpha v; plain RMSprop with momentum (the gradient at theta) does not: the
    trajectory test can fail."""
    from crnn_jax.config import Config
    from crnn_jax.training import steps as S

    def grad_softplus(p):  # the gradient of softplus(L) = sigmoid(L) grad L, in float64
        return {k: g / (1.0 + np.exp(-loss_np(p))) for k, g in grad_np(p).items()}

    def grad_at_theta_variant(steps):
        theta = {k: np.array(x) for k, x in THETA0.items()}
        v = {k: np.zeros_like(x) for k, x in theta.items()}
        r = {k: np.zeros_like(x) for k, x in theta.items()}
        out = []
        for _ in range(steps):
            g = grad_softplus(theta)
            r = {k: 0.9 * r[k] + 0.1 * g[k] ** 2 for k in r}
            v = {k: 0.9 * v[k] - 0.05 / np.sqrt(1e-8 + r[k]) * g[k] for k in v}
            theta = {k: theta[k] + v[k] for k in theta}
            out.append(theta)
        return out

    cfg = Config(learning_rate=0.05, rms_decay=0.9, momentum=0.9, eps=1e-8)
    net, tx = LossNet(), S.make_optimizer(cfg, 100)
    state = S.create_state(net, tx, 8, seed=0)
    step = jax.jit(jax.vmap(S.make_train_step(net, tx, head="softmax", seed=0), in_axes=(None, 0), axis_name=S.AXIS))
    batch = {"crops": np.zeros((1, 1, 8), np.int16), "gains": np.ones((1, 1), np.float32),
             "labels": np.ones((1, 1), np.int32)}  # [1 device, 1 example, ...]
    got = []
    for _ in range(STEPS):
        state, _ = step(state, batch)
        state = jax.tree.map(lambda x: x[0], state)
        got.append(jax.tree.map(np.asarray, dict(state.params)))
    assert int(state.step) == STEPS
    want = book_algorithm_8_6(THETA0, grad_softplus, 0.05, 0.9, 0.9, 1e-8, STEPS)
    assert_trajectories_close(got, want, rtol=1e-5, atol=1e-5)
    wrong = grad_at_theta_variant(STEPS)[-1]
    assert max(np.max(np.abs(wrong[k] - got[-1][k])) for k in SHAPES) > 1e-3


def test_trajectory_float32_close_to_book():
    want = book_algorithm_8_6(THETA0, grad_np, HYPER["learning_rate"], HYPER["decay"], HYPER["momentum"],
                              1e-8, STEPS)
    params = {k: jnp.asarray(x, jnp.float32) for k, x in THETA0.items()}
    got = run_jax(rmsprop_nesterov(**HYPER), params, STEPS)
    assert all(a[k].dtype == np.float32 for a in got for k in SHAPES)
    assert_trajectories_close(got, want, rtol=1e-5, atol=1e-5)


def test_schedule_is_honoured_from_step_zero():
    schedule = optax.linear_schedule(init_value=0.08, end_value=0.01, transition_steps=15)
    def lr_np(t):   # the same schedule written out: linear from 0.08 to 0.01 over 15 steps, then constant
        return 0.08 + (0.01 - 0.08) * min(t, 15) / 15
    want = book_algorithm_8_6(THETA0, grad_np, lr_np, 0.9, 0.9, 1e-6, STEPS)
    # float32: optax schedules evaluate in float32 for the int32 step count even under x64.
    params = {k: jnp.asarray(x, jnp.float32) for k, x in THETA0.items()}
    got = run_jax(rmsprop_nesterov(schedule, decay=0.9, momentum=0.9, eps=1e-6), params, STEPS)
    assert_trajectories_close(got, want, rtol=1e-5, atol=1e-5)
    # An off-by-one in the step count (schedule evaluated at t+1) would be far outside that tolerance.
    shifted = book_algorithm_8_6(THETA0, grad_np, lambda t: lr_np(t + 1), 0.9, 0.9, 1e-6, STEPS)
    assert max(np.max(np.abs(shifted[-1][k] - got[-1][k])) for k in SHAPES) > 1e-3


@pytest.mark.parametrize("x64", [False, pytest.param(True, marks=pytest.mark.slow)])  # x64: a user's opt-in
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtypes_preserved(dtype, x64):
    with jax.enable_x64(x64):
        params = {k: jnp.asarray(x, dtype) for k, x in THETA0.items()}
        schedule = optax.exponential_decay(0.05, transition_steps=5, decay_rate=0.5)
        for lr in (0.05, schedule):
            tx = rmsprop_nesterov(lr)

            @jax.jit
            def step(p, s):
                grads = jax.grad(loss_jnp)(interim_params(p, s))
                updates, s = tx.update(grads, s, p)
                p = optax.apply_updates(p, updates)
                return p, s, updates, interim_params(p, s)

            p, state = params, tx.init(params)
            for _ in range(3):
                p, state, updates, interim = step(p, state)
            trees = {"updates": updates, "params": p, "r": state[0].r, "v": state[1].v, "interim": interim}
            for name, tree in trees.items():
                for leaf in jax.tree.leaves(tree):
                    assert leaf.dtype == dtype, (name, leaf.dtype)
                    assert bool(jnp.all(jnp.isfinite(leaf))), name
    if dtype == jnp.bfloat16:
        # bfloat16 follows the float32 path to bfloat16 precision (8 mantissa bits), on a loss whose gradients
        # stay away from 0 (RMSprop's g/√r is sign-like, so a near-zero gradient would amplify rounding).
        def bowl(q):
            return sum(jnp.sum(0.5 * (q[k].astype(jnp.float32) - 3.0) ** 2) for k in SHAPES)
        p32 = {k: jnp.asarray(x, jnp.float32) for k, x in THETA0.items()}
        got16 = run_jax(rmsprop_nesterov(0.05), params, 5, loss=bowl)[-1]
        got32 = run_jax(rmsprop_nesterov(0.05), p32, 5, loss=bowl)[-1]
        for k in SHAPES:
            assert got16[k].dtype == jnp.bfloat16
            np.testing.assert_allclose(np.asarray(got16[k], np.float32), got32[k], rtol=2e-2, atol=2e-2)


def test_jitted_step_traces_once():
    traces = []
    tx = optax.chain(optax.clip_by_global_norm(10.0),
                     rmsprop_nesterov(optax.cosine_decay_schedule(0.05, 100)))
    step = make_step(tx, loss_jnp, counter=traces)
    params = {k: jnp.asarray(x, jnp.float32) for k, x in THETA0.items()}
    state = tx.init(params)
    for _ in range(4):
        params, state = step(params, state)
    assert len(traces) == 1
    assert int(state[1][1].count) == 4


def test_converges_on_ill_conditioned_quadratic():
    n, steps = 20, 800
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    hess = (q * np.logspace(-2, 2, n)) @ q.T          # condition number 1e4, not axis aligned
    x0 = rng.normal(size=n)
    def loss(p):
        return 0.5 * p["x"] @ jnp.asarray(hess, jnp.float32) @ p["x"]
    params = {"x": jnp.asarray(x0, jnp.float32)}
    initial = float(loss(params))
    tx = rmsprop_nesterov(optax.exponential_decay(0.05, transition_steps=200, decay_rate=0.1))
    ratio = float(loss(run_jax(tx, params, steps, loss=loss)[-1])) / initial
    # Baseline: plain gradient descent just inside its stability limit 2/λ_max, same number of steps.
    x = x0.copy()
    for _ in range(steps):
        x = x - 0.95 * (2 / 100.0) * (hess @ x)
    gd_ratio = 0.5 * x @ hess @ x / (0.5 * x0 @ hess @ x0)
    assert ratio < 1e-5, ratio
    assert ratio < gd_ratio / 10, (ratio, gd_ratio)


def test_frozen_dict_params():
    params = {k: jnp.asarray(x, jnp.float32) for k, x in THETA0.items()}
    want = run_jax(rmsprop_nesterov(**HYPER), params, 5)[-1]
    got = run_jax(rmsprop_nesterov(**HYPER), FrozenDict(params), 5)[-1]
    for k in SHAPES:
        np.testing.assert_array_equal(np.asarray(got[k]), want[k])


def test_interim_params_finds_velocity_in_chain():
    params = {k: jnp.asarray(x, jnp.float32) for k, x in THETA0.items()}
    tx = optax.chain(optax.clip_by_global_norm(1.0), rmsprop_nesterov(0.1, momentum=0.5))
    state = tx.init(params)
    step = make_step(tx, loss_jnp)
    for _ in range(2):
        params, state = step(params, state)
    rms_state, vel_state = state[1]
    assert isinstance(rms_state, ScaleByBookRmsState) and isinstance(vel_state, BookNesterovState)
    assert all(float(jnp.max(jnp.abs(x))) > 0 for x in jax.tree.leaves(vel_state.v))
    got = interim_params(params, state)
    for k in SHAPES:
        np.testing.assert_allclose(got[k], params[k] + 0.5 * vel_state.v[k], rtol=1e-6)


def test_book_params_are_theta_and_interim_params_theta_plus_alpha_v():
    # After each step of rmsprop_nesterov: book_params (what is evaluated and checkpointed) is the book's
    # theta, and interim_params (where the next gradient is taken) its theta + alpha v, both against the float64
    # transcription.
    with jax.enable_x64(True):
        params = {k: jnp.asarray(x, jnp.float64) for k, x in THETA0.items()}
        tx = rmsprop_nesterov(**HYPER, eps=1e-2)
        step = make_step(tx, loss_jnp)
        state = tx.init(params)
        thetas, interims = [], []
        for _ in range(5):
            params, state = step(params, state)
            thetas.append(jax.tree.map(np.asarray, book_params(params, state)))
            interims.append(jax.tree.map(np.asarray, interim_params(params, state)))
    want = book_algorithm_8_6(THETA0, grad_np, HYPER["learning_rate"], HYPER["decay"], HYPER["momentum"], 1e-2, 5)
    assert_trajectories_close(thetas, want, rtol=1e-12, atol=1e-13)
    velocity = [{k: b[k] - a[k] for k in SHAPES} for a, b in zip([THETA0] + want, want)]  # v = theta_t - theta_t-1
    assert_trajectories_close(interims, [{k: t[k] + HYPER["momentum"] * v[k] for k in SHAPES}
                                         for t, v in zip(want, velocity)], rtol=1e-12, atol=1e-12)
    assert max(np.max(np.abs(interims[-1][k] - thetas[-1][k])) for k in SHAPES) > 1e-3  # they differ


def test_interim_params_rejects_states_without_one_velocity():
    params = {k: jnp.asarray(x, jnp.float32) for k, x in THETA0.items()}
    with pytest.raises(ValueError, match="no BookNesterovState"):
        interim_params(params, optax.adam(1e-3).init(params))
    with pytest.raises(ValueError, match="no BookNesterovState"):
        book_params(params, optax.sgd(1e-3, momentum=0.9, nesterov=True).init(params))
    twice = optax.chain(rmsprop_nesterov(0.1), rmsprop_nesterov(0.1)).init(params)
    with pytest.raises(ValueError, match="2 BookNesterovState"):
        interim_params(params, twice)
    with pytest.raises(ValueError, match="tree structure"):
        interim_params({"w": params["w"]}, rmsprop_nesterov(0.1).init(params))


@pytest.mark.parametrize("kwargs, name", [
    (dict(learning_rate=-0.1), "learning_rate"), (dict(learning_rate=math.nan), "learning_rate"),
    (dict(learning_rate="fast"), "learning_rate"), (dict(learning_rate=0.1, decay=1.0), "decay"),
    (dict(learning_rate=0.1, momentum=-0.1), "momentum"), (dict(learning_rate=0.1, momentum=1.0), "momentum"),
    (dict(learning_rate=0.1, eps=-1e-8), "eps"),
])
def test_bad_hyperparameters_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        rmsprop_nesterov(**kwargs)


# --- decoupled weight decay and the learning-rate warm-up (steps.make_optimizer) ---------------------------------
def book_with_decoupled_decay(theta, grad, lr, rho, alpha, delta, wd, steps, decayed=("w",)):
    """Algorithm 8.6 as above, then θ ← θ + v − ε_t λ θ for the decayed leaves (θ before the step)."""
    theta = {k: np.array(x, np.float64) for k, x in theta.items()}
    v = {k: np.zeros_like(x) for k, x in theta.items()}
    r = {k: np.zeros_like(x) for k, x in theta.items()}
    out = []
    for t in range(steps):
        eps_t = lr(t) if callable(lr) else lr
        g = grad({k: theta[k] + alpha * v[k] for k in theta})
        r = {k: rho * r[k] + (1 - rho) * g[k] * g[k] for k in r}
        v = {k: alpha * v[k] - (eps_t / np.sqrt(delta + r[k])) * g[k] for k in v}
        theta = {k: theta[k] + v[k] - (eps_t * wd * theta[k] if k in decayed else 0.0) for k in theta}
        out.append(theta)
    return out


def test_decoupled_weight_decay_matches_its_formula_and_leaves_velocity_alone():
    from crnn_jax.optim import decoupled_weight_decay

    want = book_with_decoupled_decay(THETA0, grad_np, 0.05, 0.9, 0.9, 1e-2, 0.5, STEPS)
    with jax.enable_x64(True):
        params = {k: jnp.asarray(x, jnp.float64) for k, x in THETA0.items()}
        tx = optax.chain(rmsprop_nesterov(**HYPER, eps=1e-2), decoupled_weight_decay(0.5, 0.05))
        got = run_jax(tx, params, STEPS)
    assert_trajectories_close(got, want, rtol=1e-12, atol=1e-13)  # only "w" (2-D) decays: the mask is tested too
    plain = book_algorithm_8_6(THETA0, grad_np, 0.05, 0.9, 0.9, 1e-2, STEPS)
    assert np.max(np.abs(plain[-1]["w"] - got[-1]["w"])) > 1e-3  # the decay really acts
    with pytest.raises(ValueError, match="rate"):
        decoupled_weight_decay(-1.0, 0.1)


def test_make_optimizer_off_is_algorithm_8_6_and_warmup_values():
    from crnn_jax.training import steps as S
    from crnn_jax.config import Config

    params = {k: jnp.asarray(x, jnp.float32) for k, x in THETA0.items()}
    off = S.make_optimizer(Config(), 100)
    # weight_decay 0: the very state of rmsprop_nesterov (no decay transformation chained)...
    assert jax.tree.structure(off.init(params)) == jax.tree.structure(rmsprop_nesterov(1e-3).init(params))
    assert S.learning_rate_of(Config(), 100) == 1e-3
    # ... and the same trajectory as the book's.
    got = run_jax(S.make_optimizer(Config(learning_rate=0.05, eps=1e-8), 100), params, STEPS)
    want = book_algorithm_8_6(THETA0, grad_np, 0.05, 0.9, 0.9, 1e-8, STEPS)
    assert_trajectories_close(got, want, rtol=1e-5, atol=1e-5)
    on = S.make_optimizer(Config(weight_decay=0.1), 100)
    assert jax.tree.structure(on.init(params)) != jax.tree.structure(off.init(params))
    # Warm-up: lr (t + 1) / W for t < W, then the schedule; composes with cosine over the whole run.
    lr = S.learning_rate_of(Config(learning_rate=0.1, warmup_steps=4), 100)
    np.testing.assert_allclose([float(lr(jnp.int32(t))) for t in range(6)], [0.025, 0.05, 0.075, 0.1, 0.1, 0.1],
                               rtol=1e-6)
    cos = S.learning_rate_of(Config(learning_rate=0.1, warmup_steps=4, lr_schedule="cosine"), 100)
    for t in (0, 2, 3, 50, 99):
        want_t = 0.1 * 0.5 * (1 + math.cos(math.pi * t / 100)) * min(1.0, (t + 1) / 4)
        assert float(cos(jnp.int32(t))) == pytest.approx(want_t, rel=1e-5, abs=1e-8)
