"""Checkpoints with orbax: atomic saves (a temporary directory renamed when complete), the newest few kept.

A save that is killed half-way leaves orbax's temporary directory behind, never a checkpoint that looks
complete, so a resumed run always restores a state that was fully written.
"""

from __future__ import annotations

import os
from typing import Any

import jax
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
        """Write `state` as checkpoint `step` (blocking until it is complete on disk)."""
        self._mngr.save(step, args=ocp.args.StandardSave(state), force=True)
        self._mngr.wait_until_finished()

    def restore(self, like: Any, step: int | None = None) -> Any:
        """The checkpoint `step` (default: newest) with the structure, shapes and dtypes of `like`."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        return self._mngr.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()
