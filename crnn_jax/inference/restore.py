"""A training workdir -> the model its test pass used: config.json, classes.json and the tested checkpoint
(best/ or the newest of checkpoints/), checked against the model the config describes before anything is
restored. Shared by predict, export and evaluate; reads the workdir, never writes it."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

import jax

from crnn_jax.training import checkpoint as ckpt_lib
from crnn_jax import model as model_lib
from crnn_jax.training import steps as steps_lib
from crnn_jax.config import Config, ConfigError


def workdir_state(workdir: str, warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr)
                  ) -> tuple[Config, tuple[str, ...], steps_lib.TrainState]:
    """The checkpoint a training workdir's test pass uses -> (its Config, its genres, the restored
    TrainState on this process's first device): best/ (the best validation pass)
    when the config tests the best checkpoint and best/ holds one, else the newest of checkpoints/. Reads
    config.json, classes.json and the checkpoint, writes nothing. A damaged newest checkpoint (its file
    list or checksums disagree, or orbax cannot read it) is passed over for the newest intact older one,
    with a one-line `warn` naming both; nothing is moved (training does that on resume). Raises ConfigError
    (one line) when the workdir cannot give a model."""
    if not os.path.isdir(workdir):
        raise ConfigError(f"--workdir {workdir}: no such directory")
    try:
        cfg = Config.from_dict(_read_json(workdir, "config.json"))
    except (TypeError, ValueError) as e:  # ConfigError is a ValueError: a bad or foreign config.json
        raise ConfigError(f"{os.path.join(workdir, 'config.json')}: {e}") from None
    classes = _read_json(workdir, "classes.json").get("class_names")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ConfigError(f"{os.path.join(workdir, 'classes.json')} has no list of class_names")
    ck_dir = os.path.join(workdir, "checkpoints")
    best_dir = os.path.join(workdir, "best")
    if cfg.test_checkpoint == "best" and os.path.isdir(best_dir) and any(n.isdigit() for n in os.listdir(best_dir)):
        ck_dir = best_dir  # what train.py's test pass restored (results.json: tested_checkpoint "best")
    if not os.path.isdir(ck_dir):  # checked first: Checkpointer would create the directory
        raise ConfigError(f"--workdir {workdir} has no checkpoints/ (train it first)")
    net = model_lib.build_model(cfg, len(classes))
    # Shapes only (traced, never compiled or run), placed on this process's first device: a checkpoint
    # written by a run on 8 GPUs restores onto a laptop's CPU, whatever sharding it was saved with.
    here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=here), jax.eval_shape(
        lambda: steps_lib.create_state(net, steps_lib.make_optimizer(cfg, 1), cfg.crop_samples, cfg.seed)))
    ckpt = ckpt_lib.Checkpointer(ck_dir)
    try:
        state, step = _restore_newest_intact(ckpt, ck_dir, like, warn)
    finally:
        ckpt.close()
    if state is None:
        raise ConfigError(f"--workdir {workdir} has no checkpoint in {ck_dir} (train it first)")
    return cfg, tuple(classes), state


def _restore_newest_intact(ckpt: ckpt_lib.Checkpointer, ck_dir: str, like, warn: Callable[[str], None]):
    """(state, step) of the newest checkpoint in ck_dir that restores intact, (None, None) when there is
    none at all. A shape mismatch is an error at once (the config, not the files, is wrong); damaged ones
    are skipped, and ConfigError when every one is damaged."""
    damaged: list[tuple[int, str]] = []
    for step in sorted(ckpt.all_steps(), reverse=True):
        why = ckpt.damage(step)
        if not why:
            # Compare shapes before restoring: a restore that fails half-way leaves orbax's pending reads
            # to die noisily at interpreter exit, which is not the one-line error a user should see.
            try:
                stored = stored_shapes(ck_dir, step)
            except ConfigError as e:
                why = str(e).split(" is unreadable ", 1)[-1]
            else:
                differs = mismatch(flat_shapes(like), stored)
                if differs:
                    raise ConfigError(f"checkpoint {step} in {ck_dir} does not match the model that config.json "
                                      f"and classes.json describe: {differs}")
                try:
                    state = ckpt.restore(like, step)
                except Exception as e:  # shapes agreed, so the files themselves are damaged
                    why = f"orbax cannot restore it: {' '.join(str(e).split())[:200]}"
        if why:
            damaged.append((step, why))
            continue
        if damaged:
            warn(f"warning: checkpoint {damaged[0][0]} in {ck_dir} is damaged ({damaged[0][1]}); using the newest "
                 f"intact one, checkpoint {step}" + (f" (also damaged: {', '.join(str(s) for s, _ in damaged[1:])})"
                                                    if len(damaged) > 1 else ""))
        return state, step
    if damaged:
        raise ConfigError(f"checkpoint {damaged[0][0]} in {ck_dir} is unreadable ({damaged[0][1]})"
                          + (f"; so are the older {', '.join(str(s) for s, _ in damaged[1:])}" if len(damaged) > 1
                             else "") + ": train the run again or restore the folder from a copy")
    return None, None


def flat_shapes(tree) -> dict[tuple[str, ...], tuple[int, ...]]:
    """A pytree of arrays (or orbax array metadata) -> {path as names: shape}; state fields, dict keys
    and sequence indices alike, so a TrainState and a checkpoint's stored tree compare directly."""
    out = {}
    for path, leaf in jax.tree.leaves_with_path(tree):
        key = tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
        out[key] = tuple(leaf.shape)
    return out


def stored_shapes(ck_dir: str, step: int) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Shapes in checkpoint `step`, read from orbax's metadata without loading any array."""
    import orbax.checkpoint as ocp
    from etils import epath

    # checkpoint.Checkpointer saves one item, which orbax's CheckpointManager names "default"; orbax wants
    # an absolute path (a relative --workdir failed here with "Checkpoint path should be absolute").
    try:
        return flat_shapes(ocp.StandardCheckpointHandler().metadata(
            epath.Path(os.path.abspath(ck_dir)) / str(step) / "default"))
    except Exception as e:  # missing or damaged metadata: the checkpoint cannot be used either way
        raise ConfigError(f"checkpoint {step} in {ck_dir} is unreadable ({' '.join(str(e).split())[:200]})") from None


def mismatch(model: dict, stored: dict) -> str:
    """'' when both {path: shape} maps agree, else the first difference in words."""
    name = "/".join
    for k in sorted(set(model) | set(stored), key=lambda k: (k[0] != "params", k)):  # parameters first
        if k not in stored:
            return f"the checkpoint has no {name(k)}"
        if k not in model:
            return f"the checkpoint holds {name(k)}, which the model does not have"
        if model[k] != stored[k]:
            return f"{name(k)} is {stored[k]} in the checkpoint, the model needs {model[k]}"
    return ""


def _read_json(workdir: str, name: str) -> dict:
    path = os.path.join(workdir, name)
    try:
        with open(path) as f:
            d = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"--workdir {workdir} has no {name}; is it a training workdir?") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} is unreadable ({e})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return d
