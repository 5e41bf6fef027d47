"""The workdir guard: which folder a run may write into, and the one line a user sees when the machine says no.

check(workdir, cfg) runs before any audio is decoded. It refuses (ConfigError, one line, nothing written):
  - a workdir that is a file, or under one;
  - a non-empty folder that holds no crnn_jax run (no config.json of ours): another program's files are
    never truncated or overwritten;
  - a workdir whose checkpoints were trained with another config (a field outside `resumable` differs);
    a run that saved no checkpoint (it failed on a bad flag or out of memory) is simply started over with
    the new config;
  - a cosine-schedule run resumed with another total number of steps (--epochs / --max-steps): its
    learning rate at every step depends on that total;
  - a workdir it cannot write (tried for real, with a file created and removed).

explain(error, cfg) turns a failure of the machine (device or host out of memory, disk full, permission
denied) into one line naming what to change, or None when the error is not one of those (a real bug,
whose traceback is kept).

train_seconds_at / TRAIN_TIME: `<workdir>/train_time.jsonl` holds, for every checkpoint, the training
seconds summed over every segment of the run up to it (written just before the checkpoint, so whatever
checkpoint a run resumes from has its line, and lines past it are dropped like those of metrics.jsonl).
"""

from __future__ import annotations

import errno
import json
import os

from crnn_jax.config import Config, ConfigError

TRAIN_TIME = "train_time.jsonl"
# config.json fields that mark the file as ours (another program's config.json has other keys).
_OUR_KEYS = {"model", "conv_channels", "freq_pools", "n_mels", "sample_rate", "crop_seconds"}


PROBE_PREFIX = ".crnn_jax-write-test-"  # the file check() writes and removes to test that the workdir is writable


def has_checkpoints(workdir: str) -> bool:
    """Does `workdir/checkpoints` hold any numbered checkpoint folder (intact or not)?"""
    d = os.path.join(workdir, "checkpoints")
    try:
        return any(name.isdigit() for name in os.listdir(d))
    except OSError:
        return False


def check(workdir: str, cfg: Config, resumable: set[str], log=print) -> None:
    """Refuse a workdir this run must not write into (see module docstring); otherwise make sure it exists
    and is writable. log: where a note goes when a run without checkpoints is started over."""
    if os.path.lexists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir {workdir} is a file, not a folder; choose another --workdir")
    if os.path.isdir(workdir):
        _check_existing(workdir, cfg, resumable, log)
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f"{PROBE_PREFIX}{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:  # name the workdir, not the probe file
        raise ConfigError(_os_line(OSError(e.errno, e.strerror, workdir), cfg, "--workdir")) from None


def _check_existing(workdir: str, cfg: Config, resumable: set[str], log) -> None:
    try:
        # Another process of the same run may be probing the folder right now (see check): not a foreign file.
        entries = sorted(e for e in os.listdir(workdir) if not e.startswith(PROBE_PREFIX))
    except OSError as e:
        raise ConfigError(_os_line(e, cfg, "--workdir")) from None
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        if has_checkpoints(workdir):
            raise ConfigError(f"--workdir {workdir} holds checkpoints but no config.json to say how they were "
                              f"trained; put its config.json back, or choose another --workdir")
        if entries and entries != ["checkpoints"]:  # an empty checkpoints/: ours, from a run that died early
            shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
            raise ConfigError(f"--workdir {workdir} is not empty ({shown}) and holds no crnn_jax run; "
                              f"choose a new or empty folder (its files are left as they are)")
        return
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} is unreadable ({e}); choose another --workdir") from None
    if not isinstance(old, dict) or not _OUR_KEYS <= set(old):
        raise ConfigError(f"--workdir {workdir} holds a config.json that is not crnn_jax's; choose a new or "
                          f"empty folder (its files are left as they are)")
    if not has_checkpoints(workdir):
        if _differ(old, cfg, resumable):
            log(f"workdir {workdir}: its run saved no checkpoint; starting it over with this config")
        return
    new = cfg.__dict__
    diff = _differ(old, cfg, resumable)
    if diff:
        k = diff[0]
        raise ConfigError(f"workdir {workdir} holds a run with a different config ({k}: "
                          f"{old.get(k, saved_defaults().get(k))!r} -> "
                          f"{new.get(k)!r}{' and more' if len(diff) > 1 else ''}); choose another --workdir")
    if new.get("lr_schedule") == "cosine":
        was, now = (old.get("max_steps"), old.get("epochs")), (cfg.max_steps, cfg.epochs)
        if was[0] != now[0] or (now[0] is None and was[1] != now[1]):
            flag, value = ("--max-steps", was[0]) if was[0] is not None else ("--epochs", was[1])
            asked = f"--max-steps {now[0]}" if now[0] is not None else f"--epochs {now[1]}"
            raise ConfigError(f"workdir {workdir} holds a cosine-schedule run of {flag} {value}, whose learning "
                              f"rate decays over that total; it cannot resume with {asked}: rerun with {flag} "
                              f"{value}, or choose another --workdir")


def saved_defaults() -> dict:
    """Config's defaults as config.json stores them."""
    return json.loads(Config().to_json())


def _differ(old: dict, cfg: Config, resumable: set[str]) -> list[str]:
    """Fields of a saved config.json that differ from cfg, outside `resumable`, sorted. A field the saved
    file lacks (written before the field existed) counts as its default, which is what that version ran."""
    new = json.loads(cfg.to_json())
    old = {**saved_defaults(), **old}
    return [k for k in sorted(set(old) | set(new)) if k not in resumable
            and json.dumps(old.get(k)) != json.dumps(new.get(k))]


# --- training time over resumed segments --------------------------------------------------------------------
def train_seconds_at(rows: list[dict], step: int) -> float:
    """Training seconds of every segment up to checkpoint `step`, from train_time.jsonl rows (0 if none)."""
    return max((r["train_seconds"] for r in rows if r.get("step", 0) <= step), default=0.0)


# --- failures of the machine --------------------------------------------------------------------------------
def is_device_oom(e: BaseException) -> bool:
    """XLA's out-of-memory error, from compiling or running (orbax's RESOURCE_EXHAUSTED for a full disk is
    a ValueError, turned into OSError by checkpoint.Checkpointer.save)."""
    import jax

    return isinstance(e, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" in str(e)


def explain(e: BaseException, cfg: Config | None) -> str | None:
    """One line for a failure a user can fix by changing a flag or freeing a resource; None otherwise."""
    if is_device_oom(e):
        first = str(e).strip().splitlines()[0][:160]
        keep = ""
        if cfg is not None and has_checkpoints(cfg.resolved_workdir()):
            keep = (f"; to resume {cfg.resolved_workdir()} as it is, try --data-placement host or a smaller "
                    f"--steps-per-call (they do not change what is learned)")
        now = f" (now {cfg.batch_size})" if cfg is not None else ""
        return (f"out of device memory ({first}); lower --batch-size{now} or --crop-seconds, or pass "
                f"--data-placement host to keep the data set off the device{keep}")
    if isinstance(e, MemoryError):
        return ("out of host memory; use a smaller data set or crop (--crop-seconds), or a machine with more "
                "memory")
    if isinstance(e, OSError):
        return _os_line(e, cfg)
    return None


def _os_line(e: OSError, cfg: Config | None, flag: str | None = None) -> str:
    """One line for an OSError: the path, the reason, and which flag moves it elsewhere."""
    path = e.filename or ""
    flag = flag or _flag_of(path, cfg)
    why = e.strerror or str(e)
    if e.errno == errno.ENOSPC:
        return (f"the disk is full: writing {path} failed ({why}); free space on it or choose a {flag} on "
                f"another disk, then rerun with the same flags: the checkpoints already written are intact")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path} ({why}); choose a {flag} you can write to"
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{path}: part of this path is a file, not a folder ({why}); choose another {flag}"
    return f"{path}: {why}; check the disk or choose another {flag}"


def _flag_of(path: str, cfg: Config | None) -> str:
    """The flag that decides where `path` lives: --workdir, --cache-dir or --data."""
    if cfg is None or not path:
        return "--workdir"
    from crnn_jax.data import dataset as data  # the cache's location: $CRNN_JAX_CACHE or ~/.cache/crnn_jax by default

    full = os.path.abspath(str(path))
    for flag, root in (("--workdir", cfg.resolved_workdir()), ("--cache-dir", data.cache_dir(cfg.cache_dir)),
                       ("--data", cfg.data)):
        root = os.path.abspath(root)
        if full == root or full.startswith(root + os.sep):
            return flag
    return "--workdir"
