"""Checkpoints with orbax: atomic saves (a temporary directory renamed when complete), the newest few kept.

A save that is killed half-way leaves orbax's temporary directory behind, never a checkpoint that looks
complete, so a resumed run always restores a state that was fully written.

With several processes every process calls save and restore (orbax synchronises them and one process
writes each array). The training state there is host-local, a copy on each process's own devices, which
orbax refuses to save; it is saved as one global array replicated over every device of the run and
restored back to the host-local form. The directory must be on a filesystem every process sees.

Damage. Orbax notices a truncated file or a missing one, but not bytes overwritten in place (its array
files are not checksummed: a flipped byte restores as a wrong number). So every checkpoint also gets
`crnn_jax.sha256`, the size and SHA-256 of each of its files, written after orbax has finished.
restore_intact walks from the newest checkpoint down: one that fails its file list or orbax's restore is
damaged; the newest intact one is restored, and each damaged one newer than it is moved (renamed, never
deleted) to `<checkpoints>-damaged/<step>` before training goes on, so that neither orbax's max_to_keep
nor a new save at the same step can remove it. With several processes all judge the same files, then
process 0 moves, then all forget the moved steps, with a barrier between each (a process that still
listed a moved step would skip its collective save and hang the others).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from crnn_jax import files as files_lib
from crnn_jax.errors import CheckpointError, one_line as _one_line


MANIFEST = "crnn_jax.sha256"




class Checkpointer:
    """Save/restore a TrainState pytree under `directory` (created on demand).

    keep: how many of the newest checkpoints survive; older ones are deleted by orbax, never any file
    that is not one of our own numbered checkpoints.
    """

    def __init__(self, directory: str, keep: int = 2):
        self.directory = os.path.abspath(directory)
        self.damaged_directory = self.directory + "-damaged"
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
        try:
            self._mngr.save(step, args=ocp.args.StandardSave(state), force=True)
            self._mngr.wait_until_finished()
        except Exception as e:  # tensorstore reports a full disk as ValueError("... [os_error_code='28']")
            raise _as_os_error(e, self.directory) from None
        if jax.process_index() == 0:
            self._write_manifest(step)

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _write_manifest(self, step: int) -> None:
        d = self._step_dir(step)
        files = {rel: _digest(os.path.join(d, rel)) for rel in _files_under(d) if rel != MANIFEST}
        with files_lib.atomic(os.path.join(d, MANIFEST)) as f:
            json.dump(files, f, indent=0, sort_keys=True)

    def damage(self, step: int) -> str:
        """Why checkpoint `step` fails its file list ('' if it has none or matches it)."""
        d = self._step_dir(step)
        path = os.path.join(d, MANIFEST)
        if not os.path.exists(path):
            return ""  # written by an older version, or killed before the list: orbax's restore decides
        try:
            with open(path) as f:
                files = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return f"its file list {MANIFEST} is unreadable"
        for rel, (size, digest) in sorted(files.items()):
            full = os.path.join(d, rel)
            try:
                if os.path.getsize(full) != size:
                    return f"{rel} has {os.path.getsize(full)} bytes, {size} were written"
                if _digest(full)[1] != digest:
                    return f"{rel} differs from what was written"
            except OSError as e:  # missing, a folder, unreadable
                return f"{rel} is missing" if not os.path.isfile(full) else f"{rel} is unreadable ({e.strerror})"
        return ""

    def restore_intact(self, like: Any, warn: Callable[[str], None] = print, *, move_damaged: bool = True
                       ) -> tuple[Any, int] | None:
        """The one restore walk (training's resume; predict, export and evaluate read-only): the newest
        checkpoint that is intact -> (state like `like`, its step); None when there is none at all.

        A checkpoint is passed over when its file list or checksums disagree or orbax cannot read it; its
        stored shapes are compared with `like` before any array is read, and a difference is a
        CheckpointError at once (the config, not the files, is wrong). move_damaged: process 0 moves the
        damaged newer ones to `damaged_directory` (a resumed run must not keep them in its keep-window);
        False: nothing is moved (the workdir is only read). Either way one warning names them; when every
        checkpoint is damaged, CheckpointError and nothing is moved.
        """
        damaged: list[tuple[int, str]] = []
        for step in sorted(self.all_steps(), reverse=True):
            why = self.damage(step) or self._shapes_differ(like, step)
            if not why:
                try:
                    state = self.restore(like, step)
                except jax.errors.JaxRuntimeError:  # the device, not the files (out of memory...)
                    raise
                except Exception as e:  # shapes agreed, so the files themselves are damaged
                    why = f"orbax cannot restore it: {_one_line(e)[:200]}"
            if why:
                damaged.append((step, why))
                continue
            if damaged and move_damaged:
                # Several processes: every one has judged the same files before any is moved (the first
                # barrier), and every one forgets the moved steps (the second), or a process whose manager
                # still lists a moved step would skip the collective save of that step and hang the rest.
                _barrier(f"crnn_jax_damage_judged_{step}")
                if jax.process_index() == 0:
                    for bad, bad_why in damaged:
                        to = self._set_aside(bad)
                        warn(f"warning: checkpoint {bad} in {self.directory} is damaged ({bad_why}); moved it "
                             f"to {to} (kept, not deleted); resuming from checkpoint {step}")
                _barrier(f"crnn_jax_damage_moved_{step}")
                self._mngr.reload()
            elif damaged:
                also = f" (also damaged: {', '.join(str(s) for s, _ in damaged[1:])})" if len(damaged) > 1 else ""
                warn(f"warning: checkpoint {damaged[0][0]} in {self.directory} is damaged ({damaged[0][1]}); "
                     f"using the newest intact one, checkpoint {step}{also}")
            return state, step
        if damaged and move_damaged:
            steps = ", ".join(str(s) for s, _ in damaged)
            raise CheckpointError(f"no intact checkpoint in {self.directory} (damaged: {steps}; newest: "
                                  f"{damaged[0][1]}); move that folder aside to start the run over, or choose "
                                  f"another --workdir")
        if damaged:
            older = f"; so are the older {', '.join(str(s) for s, _ in damaged[1:])}" if len(damaged) > 1 else ""
            raise CheckpointError(f"checkpoint {damaged[0][0]} in {self.directory} is unreadable ({damaged[0][1]})"
                                  f"{older}: train the run again or restore the folder from a copy")
        return None

    def _shapes_differ(self, like: Any, step: int) -> str:
        """'' when checkpoint `step` stores the shapes of `like`; why it cannot be read when its metadata is
        damaged. CheckpointError when both are readable and differ. Read from orbax's metadata without loading
        any array: a restore that fails half-way leaves orbax's pending reads to die noisily at exit."""
        try:
            stored = flat_shapes(ocp.StandardCheckpointHandler().metadata(
                epath.Path(self._step_dir(step)) / "default"))  # the one item CheckpointManager names "default"
        except Exception as e:  # missing or damaged metadata: the checkpoint cannot be used either way
            return f"orbax cannot restore it: {_one_line(e)[:200]}"
        differs = mismatch(flat_shapes(like), stored)
        if differs:
            raise CheckpointError(f"checkpoint {step} in {self.directory} does not match the model that "
                                  f"config.json and classes.json describe: {differs}")
        return ""

    def _set_aside(self, step: int) -> str:
        """Rename checkpoint `step` into damaged_directory (as <step>, or <step>-<n> if taken) -> new path."""
        os.makedirs(self.damaged_directory, exist_ok=True)
        to, n = os.path.join(self.damaged_directory, str(step)), 1
        while os.path.lexists(to):
            to, n = os.path.join(self.damaged_directory, f"{step}-{n}"), n + 1
        os.rename(self._step_dir(step), to)
        return to

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


def _barrier(name: str) -> None:
    """Wait until every process of the run has reached the barrier `name` (nothing with one process).

    A barrier of the coordination service, not orbax's default sync_global_processes: that one is a device
    collective, which over gloo can interleave with the collectives of orbax's own threads and abort both
    processes ("Is there a distributed collective mismatch in your code?")."""
    if jax.process_count() > 1:
        ocp.multihost.get_barrier_sync_fn()(key=name, timeout_ms=300_000)


def _files_under(d: str) -> list[str]:
    """Every file below folder d, as sorted paths relative to d."""
    out = []
    for root, _, names in os.walk(d):
        out += [os.path.relpath(os.path.join(root, n), d) for n in names]
    return sorted(out)


def _digest(path: str) -> tuple[int, str]:
    """(size in bytes, SHA-256 hex) of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return os.path.getsize(path), h.hexdigest()



def _as_os_error(e: Exception, directory: str) -> Exception:
    """An orbax/tensorstore failure that is really the operating system's (disk full, permission denied)
    -> OSError(errno, strerror, directory); any other error unchanged."""
    if isinstance(e, OSError):
        return e
    m = re.search(r"os_error_code='?(\d+)", str(e))
    code = int(m.group(1)) if m else errno.ENOSPC if "No space left on device" in str(e) else None
    return OSError(code, os.strerror(code), directory) if code else e


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


def flat_shapes(tree: Any) -> dict[tuple[str, ...], tuple[int, ...]]:
    """A pytree of arrays (or orbax array metadata) -> {path as names: shape}; state fields, dict keys
    and sequence indices alike, so a TrainState and a checkpoint's stored tree compare directly."""
    out = {}
    for path, leaf in jax.tree.leaves_with_path(tree):
        key = tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
        out[key] = tuple(leaf.shape)
    return out


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
