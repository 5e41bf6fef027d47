"""RMSprop with Nesterov momentum: Goodfellow, Bengio & Courville, Deep Learning (2016), Algorithm 8.6.

The book's loop, with ε the learning rate, ρ the decay, α the momentum and δ our `eps`:

    θ̃ ← θ + α v                         interim point        -> interim_params(params, opt_state)
    g ← ∇ L(θ̃)                          gradient AT θ̃        -> the caller (jax.grad)
    r ← ρ r + (1 − ρ) g ⊙ g              accumulate           -> scale_by_book_rms
    v ← α v − (ε / √(δ + r)) ⊙ g         velocity             -> book_nesterov_velocity
    θ ← θ + v                            apply                -> optax.apply_updates(params, updates)

Written as two hand-written Optax transformations chained with `optax.chain`:
`scale_by_book_rms` turns g into u = g / √(δ + r) and `book_nesterov_velocity` turns u into v = α v − ε u and
returns v itself as the update. Nothing from optax.rmsprop / optax.sgd / optax.trace is reused.

Design choices:
- The stored `params` are the book's θ, not the interim θ̃. Evaluation, checkpoints and the exported model use θ
  (the book's iterate); the interim point exists only for one gradient evaluation, so it is built on the fly by
  `interim_params` and never stored. (The Sutskever-style rewrite that stores θ̃ would make every checkpoint a
  shifted model and the update non-book-shaped.)
- δ (`eps`) goes inside the square root, 1/√(δ + r), as in the book's own RMSProp (Algorithm 8.5). With eps=0 the
  update is the book's exactly (and, like the book, 0/0 = NaN for an element whose gradient has always been 0;
  use eps > 0 in practice).
- α is stored in the velocity state as a scalar array, so `interim_params` can find it in any state tree, e.g.
  that of `optax.chain(optax.clip_by_global_norm(1.0), rmsprop_nesterov(...))`; the update reads α from the state
  too, so interim point and velocity can never disagree.
- Dtypes follow the params: r, v and the updates have each leaf's dtype (float32 stays float32, bfloat16 stays
  bfloat16); the scalars ε, ρ, α, δ are cast to the leaf dtype, never the other way round.

Training step (inside jit / pmap):

    tx = rmsprop_nesterov(learning_rate=1e-3)
    opt_state = tx.init(params)
    ...
    grads = jax.grad(loss_fn)(interim_params(params, opt_state), batch)   # gradient at θ + αv
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)                         # θ ← θ + v
"""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class ScaleByBookRmsState(NamedTuple):
    """State of `scale_by_book_rms`: r, the decaying average of g ⊙ g (a pytree like params, params' dtypes)."""

    r: optax.Updates


class BookNesterovState(NamedTuple):
    """State of `book_nesterov_velocity`.

    count: int32 scalar, number of updates taken (the schedule's step; 0 before the first update).
    momentum: float scalar array, α (default float dtype: float32, or float64 under x64).
    v: the velocity, a pytree like params with the params' dtypes (units of params per step).
    """

    count: jax.Array
    momentum: jax.Array
    v: optax.Updates


def _check_scalar(name: str, value: Any, low: float, high: float, *, high_open: bool) -> float:
    """Return `value` as a Python float, or raise ValueError naming `name` if not finite and in range."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    ok = math.isfinite(x) and low <= x and (x < high if high_open else x <= high)
    if not ok:
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value!r}")
    return x


def scale_by_book_rms(decay: float = 0.9, eps: float = 1e-8) -> optax.GradientTransformation:
    """Scale gradients by 1/√(δ + r) with r ← ρ r + (1 − ρ) g ⊙ g (Algorithm 8.6, accumulate step).

    decay: ρ in [0, 1), dimensionless. eps: δ >= 0, in units of gradient², added inside the square root
    (Algorithm 8.5's placement); eps=0 is the book's Algorithm 8.6 exactly.
    State: `ScaleByBookRmsState(r)`, r initialised to zeros. Output: u = g / √(δ + r), same tree/dtypes as params.
    """
    decay = _check_scalar("decay", decay, 0.0, 1.0, high_open=True)
    eps = _check_scalar("eps", eps, 0.0, math.inf, high_open=True)

    def init_fn(params):
        return ScaleByBookRmsState(r=jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params

        def accumulate(g, r):
            g = g.astype(r.dtype)
            # Scalars are cast to r's dtype so bfloat16/float32 never promote (even with x64 on).
            rho = jnp.asarray(decay, r.dtype)
            return rho * r + (1 - rho) * (g * g)

        r = jax.tree.map(accumulate, updates, state.r)
        u = jax.tree.map(lambda g, r: g.astype(r.dtype) / jnp.sqrt(jnp.asarray(eps, r.dtype) + r), updates, r)
        return u, ScaleByBookRmsState(r=r)

    return optax.GradientTransformation(init_fn, update_fn)


def book_nesterov_velocity(learning_rate, momentum: float = 0.9) -> optax.GradientTransformation:
    """Velocity step v ← α v − ε u of Algorithm 8.6; the update returned is the new v (so θ ← θ + v).

    learning_rate: ε >= 0 (params units per unit of u), a float or an optax schedule called with the step count
    (0 for the first update). momentum: α in [0, 1).
    State: `BookNesterovState(count, momentum, v)`, v initialised to zeros. Updates: same tree/dtypes as params.
    """
    if not callable(learning_rate):
        learning_rate = _check_scalar("learning_rate", learning_rate, 0.0, math.inf, high_open=True)
    momentum = _check_scalar("momentum", momentum, 0.0, 1.0, high_open=True)

    def init_fn(params):
        return BookNesterovState(
            count=jnp.zeros([], jnp.int32),
            # dtype=float: the default float (float64 under x64) so α loses nothing before the per-leaf cast.
            momentum=jnp.asarray(momentum, dtype=float),
            v=jax.tree.map(jnp.zeros_like, params),
        )

    def update_fn(updates, state, params=None):
        del params
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate

        def velocity(u, v):
            alpha = state.momentum.astype(v.dtype)
            return alpha * v - jnp.asarray(lr, v.dtype) * u.astype(v.dtype)

        v = jax.tree.map(velocity, updates, state.v)
        # int32 overflows after 2**31 steps, far beyond any run here.
        new_state = BookNesterovState(count=state.count + 1, momentum=state.momentum, v=v)
        return v, new_state

    return optax.GradientTransformation(init_fn, update_fn)


def rmsprop_nesterov(learning_rate, decay: float = 0.9, momentum: float = 0.9,
                     eps: float = 1e-8) -> optax.GradientTransformation:
    """RMSprop with Nesterov momentum, Algorithm 8.6 (see the module docstring for the training-step recipe).

    learning_rate: ε, a float >= 0 or an optax schedule of the step count (0 for the first update).
    decay: ρ in [0, 1). momentum: α in [0, 1). eps: δ >= 0 inside the square root, 1/√(δ + r).
    Returns an optax.chain whose state is (ScaleByBookRmsState, BookNesterovState) and whose updates are the new
    velocity v, to be added to the stored params θ with optax.apply_updates. Gradients passed to `update` must be
    taken at `interim_params(params, opt_state)`, not at params.
    """
    return optax.chain(scale_by_book_rms(decay, eps), book_nesterov_velocity(learning_rate, momentum))


class DecoupledDecayState(NamedTuple):
    """State of `decoupled_weight_decay`: count, int32 scalar, updates taken (the schedule's step)."""

    count: jax.Array


def decoupled_weight_decay(rate: float, learning_rate, mask=lambda p: p.ndim >= 2) -> optax.GradientTransformation:
    """Decoupled weight decay (Loshchilov & Hutter 2019) to chain AFTER `rmsprop_nesterov`: adds
    −ε_t · rate · θ to the update, so θ ← θ + v − ε_t λ θ, with v Algorithm 8.6's velocity of the loss alone.

    Why decoupled, not L2 (λ θ added to g): an L2 gradient would go through 1/√(δ + r), decaying least the
    weights whose gradients have been largest, and it would enter r and v; here the book's r, v and θ̃ stay
    those of the unregularised loss and every decayed weight shrinks by the same factor (1 − ε_t λ) a step.
    Chain it only when rate > 0, so that rate 0 is Algorithm 8.6's step exactly (not a no-op added to it).

    rate: λ >= 0 per unit learning rate. learning_rate: ε, the float or schedule given to rmsprop_nesterov.
    mask(param) -> bool: which leaves decay; default the kernels (ndim >= 2), not biases nor BatchNorm
    scales and offsets. `update` needs params (the stored θ).
    """
    rate = _check_scalar("rate", rate, 0.0, math.inf, high_open=True)

    def init_fn(params):
        del params
        return DecoupledDecayState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("decoupled_weight_decay needs params: call tx.update(grads, opt_state, params)")
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate

        def decay(u, p):
            if not mask(p):
                return u
            return u - (jnp.asarray(lr, u.dtype) * jnp.asarray(rate, u.dtype)) * p.astype(u.dtype)

        return jax.tree.map(decay, updates, params), DecoupledDecayState(count=state.count + 1)

    return optax.GradientTransformation(init_fn, update_fn)


def _velocity_state(params, opt_state) -> BookNesterovState:
    """The single BookNesterovState inside `opt_state` (any nesting), checked against params' tree structure."""
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, BookNesterovState))
             if isinstance(s, BookNesterovState)]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise ValueError(f"opt_state holds {what} BookNesterovState (expected exactly one); build the optimizer "
                         "with rmsprop_nesterov(...) or book_nesterov_velocity(...) and pass its state")
    state = found[0]
    if jax.tree.structure(params) != jax.tree.structure(state.v):
        raise ValueError("params do not have the tree structure of the velocity in opt_state: "
                         f"{jax.tree.structure(params)} vs {jax.tree.structure(state.v)}")
    return state


def interim_params(params, opt_state):
    """θ̃ = θ + α v, the point where Algorithm 8.6 takes the gradient.

    params: the stored θ (any pytree of float arrays). opt_state: a state containing exactly one
    BookNesterovState, possibly nested in a chain. Returns a pytree like params, same shapes and dtypes.
    Raises ValueError if opt_state holds no (or several) velocity states or the trees differ.
    """
    state = _velocity_state(params, opt_state)
    return jax.tree.map(
        lambda p, v: (p + state.momentum.astype(v.dtype) * v).astype(p.dtype), params, state.v)


def book_params(params, opt_state):
    """θ in the book's notation: the stored params, unchanged (this module stores θ, not θ̃).

    Validates opt_state as `interim_params` does, so a caller that mixes up states fails loudly.
    """
    _velocity_state(params, opt_state)
    return params
