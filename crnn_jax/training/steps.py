"""The training state, one pure `train_step`, one `eval_step`, and the one `jax.pmap` of the project.

Data parallelism follows flax's examples/imagenet: the state is *not* replicated (pmap in_axes=None,
out_axes=None), every device gets its shard of the global batch, gradients and BatchNorm statistics are
averaged over the pmap axis `AXIS`, so one device or eight give the same numbers for the same global batch.

The optimiser is Algorithm 8.6 (optim.py): the gradient is taken at the interim point theta + alpha*v,
`state.params` always holds the book's theta, and theta is what is evaluated and checkpointed.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from crnn_jax.config import AugmentConfig
from crnn_jax.training import augment as augment_lib
from crnn_jax import model as model_lib
from crnn_jax import optim
from crnn_jax.data.dataset import INT16_SCALE

AXIS = "batch"  # the pmap axis shared by BatchNorm, the gradient pmean and the metrics pmean


class TrainState(struct.PyTreeNode):
    """Everything a checkpoint holds. step: scalar int32; params: the book's theta; batch_stats:
    BatchNorm running averages; opt_state: Algorithm 8.6's r and v (and step count)."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def learning_rate_of(cfg, total_steps: int):
    """The config's global learning rate: a float (constant, no warm-up) or a schedule of the 0-based step t.

    cosine: decayed to 0 over total_steps. warmup_steps W > 0 multiplies that by min(1, (t + 1) / W), a
    linear ramp whose first step already moves (t = 0 gets lr / W) and which composes with either schedule.
    """
    lr = cfg.learning_rate
    if cfg.lr_schedule == "cosine":
        lr = optax.cosine_decay_schedule(cfg.learning_rate, max(1, total_steps))
    if cfg.warmup_steps:
        base, w = lr, cfg.warmup_steps
        lr = lambda t: (base(t) if callable(base) else base) * jnp.minimum(1.0, (t + 1) / w)  # noqa: E731
    return lr


def make_optimizer(cfg, total_steps: int) -> optax.GradientTransformation:
    """Algorithm 8.6 with the config's learning rate (learning_rate_of), and decoupled weight decay chained
    after it only when cfg.weight_decay > 0 (so 0 leaves the book's step, and its state, exactly as they are)."""
    lr = learning_rate_of(cfg, total_steps)
    tx = optim.rmsprop_nesterov(lr, decay=cfg.rms_decay, momentum=cfg.momentum, eps=cfg.eps)
    if cfg.weight_decay > 0:
        tx = optax.chain(tx, optim.decoupled_weight_decay(cfg.weight_decay, lr))
    return tx


def create_state(net: nn.Module, tx: optax.GradientTransformation, crop: int, seed: int) -> TrainState:
    """Fresh parameters for `net` (built with axis_name=None or not: init never reduces) from `seed`."""
    init_net = net.clone(axis_name=None)
    variables = jax.jit(lambda k: init_net.init(k, jnp.zeros((1, crop), jnp.float32), train=False))(
        jax.random.PRNGKey(seed))
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables["batch_stats"],
                      opt_state=tx.init(params))


def to_audio(crops: jax.Array, gains: jax.Array) -> jax.Array:
    """int16 crops [..., batch, crop] and linear gains [..., batch] -> float32 audio [..., batch, crop]."""
    return crops.astype(jnp.float32) * (gains[..., None] / INT16_SCALE)


def make_train_step(net: nn.Module, tx: optax.GradientTransformation, *, head: str, seed: int,
                    augment: AugmentConfig | None = None, crop_samples: int = 0
                    ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """A pure train_step(state, batch) -> (state, metrics) for use under `parallel` (axis AXIS).

    batch (this device's shard): "crops" int16 [b, crop] ([b, read] with a speed change), "gains" float32 [b],
    "labels" int32 [b].
    metrics: "loss", "accuracy" (against the unmixed labels) averaged over the global batch.
    augment: what augment.py applies (None or nothing active: the plain step, unchanged); crop_samples: the
    crop the network sees, which a speed change resamples its longer read down to.
    """
    aug = augment if augment is not None and augment.active else None

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        # Dropout keys are a function of (seed, step, device), so resume and re-runs repeat exactly.
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), state.step), jax.lax.axis_index(AXIS))
        audio = to_audio(batch["crops"], batch["gains"])
        targets, extra = None, {}
        if aug is not None:  # keys of (seed, step, index in the global batch): their own stream
            b = audio.shape[0]
            keys = augment_lib.example_keys(seed, state.step, jax.lax.axis_index(AXIS) * b, b)
            crop = crop_samples if aug.speed_change > 0 else audio.shape[-1]  # a speed change reads more
            audio, targets, extra = augment_lib.apply(
                aug, keys, audio, batch["labels"], n_classes=net.n_classes, head=head,
                n_frames=net.mel_config.n_frames(crop), n_mels=net.mel_config.n_mels, crop_samples=crop,
                sample_rate=net.mel_config.sample_rate)

        def loss_of(params):
            logits, updated = net.apply({"params": params, "batch_stats": state.batch_stats}, audio, train=True,
                                        rngs={"dropout": key}, mutable=["batch_stats"], **extra)
            if targets is None:
                loss = model_lib.loss_fn(logits, batch["labels"], head).mean()
            else:
                loss = model_lib.soft_loss_fn(logits, targets, head).mean()
            return loss, (logits, updated["batch_stats"])

        grad_fn = jax.value_and_grad(loss_of, has_aux=True)
        (loss, (logits, batch_stats)), grads = grad_fn(optim.interim_params(state.params, state.opt_state))
        grads = jax.lax.pmean(grads, AXIS)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # BatchNorm already reduced its statistics over AXIS; the pmean makes the state provably identical
        # on every device (out_axes=None needs that) at the cost of a few hundred floats.
        batch_stats = jax.lax.pmean(batch_stats, AXIS)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["labels"])
        metrics = jax.lax.pmean({"loss": loss, "accuracy": accuracy}, AXIS)
        new = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
        return new, metrics

    return train_step


class DeviceAudio(NamedTuple):
    """A Dataset on the device (see feed.ResidentFeed): samples [total] int16, every song end to end;
    tail [2 * crop] int16, the last crop of samples then a crop of zeros; starts, lengths [n_songs] int32."""

    samples: jax.Array
    tail: jax.Array
    starts: jax.Array
    lengths: jax.Array


def gather_on_device(audio: DeviceAudio, songs: jax.Array, offsets: jax.Array, crop: int) -> jax.Array:
    """Crops from device-resident audio, as Dataset.crops cuts them: songs/offsets [b] -> [b, crop] int16,
    samples past a song's end are zeros.

    lax.dynamic_slice clamps a start past total - crop (it would shift the crop onto the samples before
    it), so a crop that runs off the end of `samples` (a short last song) is cut from `tail` instead.
    """
    total = audio.samples.shape[0]

    def take(s, o):
        begin = audio.starts[s] + o
        x = jnp.where(begin + crop <= total, jax.lax.dynamic_slice(audio.samples, (begin,), (crop,)),
                      jax.lax.dynamic_slice(audio.tail, (begin - (total - crop),), (crop,)))  # [crop]
        return jnp.where(jnp.arange(crop) < audio.lengths[s] - o, x, jnp.zeros((), x.dtype))

    return jax.vmap(take)(songs, offsets)


def make_multi_step(train_step: Callable, crop: int) -> Callable:
    """multi_step(state, audio, batches) -> (state, metrics): K training steps in one device call.

    batches leaves carry a leading [K] axis; metrics come back as [K]. A batch holds either "crops" (the
    host gathered them; `audio` is ignored) or "songs" and "offsets" (indices into `audio`, the data set
    resident on the device, a DeviceAudio), so only a few bytes per example cross to the device.
    """

    def multi_step(state: TrainState, audio: jax.Array, batches: dict) -> tuple[TrainState, dict]:
        def one(state: TrainState, b: dict) -> tuple[TrainState, dict]:
            if "crops" not in b:
                b = {"crops": gather_on_device(audio, b["songs"], b["offsets"], crop), "gains": b["gains"],
                     "labels": b["labels"]}
            return train_step(state, b)

        return jax.lax.scan(one, state, batches)

    return multi_step


def make_eval_step(net: nn.Module, *, head: str, gather: bool = False) -> Callable[[TrainState, dict], jax.Array]:
    """eval_step(state, batch) -> log-probabilities [b, n_classes] of this device's windows (theta, running
    BatchNorm averages, no dropout). batch: "crops" int16 [b, crop], "gains" float32 [b].

    gather (under `parallel` only): every device returns every device's windows, [n_devices, b, n_classes],
    so each process reads the whole global batch's results from one of its own devices.
    """

    def eval_step(state: TrainState, batch: dict) -> jax.Array:
        logits = net.apply({"params": state.params, "batch_stats": state.batch_stats},
                           to_audio(batch["crops"], batch["gains"]), train=False)
        logp = model_lib.log_probs(logits, head)
        return jax.lax.all_gather(logp, AXIS) if gather else logp

    return eval_step


def parallel(fn: Callable, *, n_broadcast: int = 1, state_out: bool) -> Callable:
    """The project's one `jax.pmap`: fn(*broadcast, batch) over all devices of all processes.

    The first `n_broadcast` arguments (the state; the device-resident audio) are broadcast, not replicated
    (in_axes=None), the last argument's leaves are split on their leading [n_devices] axis. With several
    processes each passes only its own devices' part, [n_local_devices, ...], and gets back only its own
    devices' outputs (the state: on its local devices).
    state_out: fn returns (state, per-device outputs) and the state comes back unreplicated too.
    """
    return jax.pmap(fn, axis_name=AXIS, in_axes=(None,) * n_broadcast + (0,),
                    out_axes=(None, 0) if state_out else 0)


def place_state(state: Any) -> Any:
    """Put the state where `parallel` returns it (every local device, sharding P() on a mesh of this
    process's devices), so the first call and every later call see the same input sharding and the step
    is traced exactly once. (With one process, local devices are all devices.)"""
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), (AXIS,))
    return jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def shard(x: np.ndarray, n_devices: int) -> np.ndarray:
    """[global_batch, ...] -> [n_devices, global_batch // n_devices, ...] (divisibility checked by caller)."""
    return x.reshape(n_devices, x.shape[0] // n_devices, *x.shape[1:])  # [devices, per_device, ...]
