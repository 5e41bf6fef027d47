"""Checkpoints with orbax: atomic saves (a temporary directory renamed when complete), the newest few kept.

A save that is killed half-way leaves orbax's temporary directory behind, never a checkpoint that looks
complete, so a resumed run always restores a state that was fully written.

With several processes every process calls save and restore (orbax synchronises them and one process
writes each array). The training state there is host-local, a copy on each process's own devices, which
orbax refuses to save; it is saved as one global array replicated over every device of the run and
restored back to the host-local form. The directory must be on a filesystem every process sees.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
    """Save/restore a TrainState pytree under `directory` (created on demand).

    keep: how many of the newest checkpoints survive; older ones are deleted by orbax, never any file
    that is not one of our own numbered checkpoints.
    """

    def __init__(self, directory: str, keep: int = 2):
        self.directory = os.path.abspath(directory)
        self._mngr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=False))

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def save(self, step: int, state: Any) -> None:
        """Write `state` as checkpoint `step` (blocking until it is complete on disk). Several processes:
        all call this with their (equal) host-local copies of the state."""
        if jax.process_count() > 1:
            state = jax.tree.map(_to_global, state)
        self._mngr.save(step, args=ocp.args.StandardSave(state), force=True)
        self._mngr.wait_until_finished()

    def restore(self, like: Any, step: int | None = None) -> Any:
        """The checkpoint `step` (default: newest) with the structure, shapes and dtypes of `like` (and its
        shardings with one process; with several, a copy on each process's own devices)."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        if jax.process_count() == 1:
            return self._mngr.restore(step, args=ocp.args.StandardRestore(abstract))
        glob = _replicated(jax.devices())
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=glob), abstract)
        return jax.tree.map(_to_local, self._mngr.restore(step, args=ocp.args.StandardRestore(abstract)))

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()


def _replicated(devices: list) -> jax.sharding.NamedSharding:
    """Every one of `devices` holds the whole array."""
    return jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(devices), ("d",)), jax.sharding.PartitionSpec())


def _rebuild(x: jax.Array, devices: list) -> jax.Array:
    """The same per-device buffers of a replicated array `x`, viewed as replicated over `devices`."""
    by_device = {shard.device: shard.data for shard in x.addressable_shards}
    return jax.make_array_from_single_device_arrays(x.shape, _replicated(devices),
                                                    [by_device[d] for d in devices if d in by_device])


def _to_global(x: Any) -> Any:
    """A host-local array replicated on this process's devices -> one global array over all devices."""
    return _rebuild(x, jax.devices()) if isinstance(x, jax.Array) else x


def _to_local(x: Any) -> Any:
    """A global replicated array -> this process's copy, replicated on its own devices."""
    return _rebuild(x, jax.local_devices()) if isinstance(x, jax.Array) else x
