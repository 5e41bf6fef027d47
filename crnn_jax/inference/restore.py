"""A training workdir -> the model its test pass used: config.json, classes.json and the tested checkpoint
(best/ or the newest of checkpoints/), checked against the model the config describes before anything is
restored. Shared by predict, export and evaluate; reads the workdir, never writes it."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import jax

from crnn_jax import files
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
        restored = ckpt.restore_intact(like, warn, move_damaged=False)
    finally:
        ckpt.close()
    if restored is None:
        raise ConfigError(f"--workdir {workdir} has no checkpoint in {ck_dir} (train it first)")
    return cfg, tuple(classes), restored[0]


def _read_json(workdir: str, name: str) -> dict:
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
        raise ConfigError(f"--workdir {workdir} has no {name}; is it a training workdir?")
    d = files.read_json(path)
    if not isinstance(d, dict):
        raise ConfigError(f"{path} is unreadable or does not hold a JSON object")
    return d
