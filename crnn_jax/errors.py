"""The failures a user can fix, and the one place any failure becomes one line.

Every error a user can act on is a `UserError` whose message is the line they see: a flag or preset value
(`ConfigError`), input data (`DataError`), a workdir's checkpoints (`CheckpointError`), a model file
(`ModelFileError`). `explain` turns the failures of the machine (out of device or host memory, a full disk,
no permission) into one line naming the flag that moves the work elsewhere. Commands print these through
`crnn_jax.cmdline.run`; nothing here imports JAX or any other module of ours.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence


class UserError(Exception):
    """Input a user can fix; str(e) is one line naming the problem and what to change."""


class ConfigError(UserError, ValueError):
    """A config value (from a preset, a flag or a saved config.json) that cannot be used."""


class DataError(UserError, ValueError):
    """Input data that cannot be used (missing folder, unreadable file, bad split list, ...)."""


class CheckpointError(UserError, RuntimeError):
    """No checkpoint of a workdir that has some is intact."""


class ModelFileError(ConfigError):
    """A model file that cannot be used: missing, foreign, damaged, truncated or of another format version."""


class Diverged(RuntimeError):
    """The loss became NaN or infinite (a run stops; not a user error: exit status 1)."""


def one_line(e: BaseException) -> str:
    """An exception's text on one line (its type name when it has none)."""
    return " ".join(str(e).split()) or type(e).__name__


def is_device_oom(e: BaseException) -> bool:
    """XLA's out-of-memory error, from compiling or running (a full disk in orbax is RESOURCE_EXHAUSTED too,
    but arrives as the OSError that training.checkpoint makes of it)."""
    return type(e).__name__ == "JaxRuntimeError" and "RESOURCE_EXHAUSTED" in str(e)


DEVICE_OOM_ADVICE = ("lower --batch-size or --crop-seconds, or pass --data-placement host to keep the data set "
                     "off the device")


def explain(e: BaseException, places: Sequence[tuple[str, str]] = (), oom_advice: str = DEVICE_OOM_ADVICE
            ) -> str | None:
    """One line for a failure a user can fix by changing a flag or freeing a resource; None otherwise.

    places: (flag, folder) pairs, the first the default: the flag whose folder holds a failing path is named.
    oom_advice: what to change when the device runs out of memory.
    """
    if is_device_oom(e):
        return f"out of device memory ({str(e).strip().splitlines()[0][:160]}); {oom_advice}"
    if isinstance(e, MemoryError):
        return "out of host memory; use a smaller data set or crop (--crop-seconds), or a machine with more memory"
    if isinstance(e, OSError):
        return os_line(e, flag_of(e.filename or "", places))
    return None


def flag_of(path: str, places: Sequence[tuple[str, str]]) -> str:
    """The flag of `places` whose folder holds `path` (the first place's flag when none does)."""
    full = os.path.abspath(str(path)) if path else ""
    for flag, root in places:
        root = os.path.abspath(root)
        if full and (full == root or full.startswith(root + os.sep)):
            return flag
    return places[0][0] if places else "output folder"


def os_line(e: OSError, flag: str) -> str:
    """One line for an OSError: the path, the reason, and the flag that moves it elsewhere."""
    path, why = e.filename or "", e.strerror or str(e)
    if e.errno == errno.ENOSPC:
        return (f"the disk is full: writing {path} failed ({why}); free space on it or choose a {flag} on "
                f"another disk, then rerun with the same flags: the checkpoints already written are intact")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path} ({why}); choose a {flag} you can write to"
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{path}: part of this path is a file, not a folder ({why}); choose another {flag}"
    return f"{path}: {why}; check the disk or choose another {flag}"
