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

oom_advice(cfg): what to change when the device runs out of memory (for errors.explain).
"""

from __future__ import annotations

import json
import os

from crnn_jax.config import Config, ConfigError
from crnn_jax.errors import DEVICE_OOM_ADVICE, os_line

# config.json fields that mark the file as ours (another program's config.json has other keys).
_OUR_KEYS = {"model", "conv_channels", "freq_pools", "n_mels", "sample_rate", "crop_seconds"}


# Fields a resumed run may change: they decide how long and how often, not what is learned.
RESUMABLE_CHANGES = frozenset({"epochs", "max_steps", "log_every", "checkpoint_every", "eval_every", "workdir",
                               "cache_dir", "workers", "steps_per_call", "data_placement", "device_data_gb",
                               "test_checkpoint", "early_stop_patience", "ensemble"})

PROBE_PREFIX = ".crnn_jax-write-test-"  # the file check() writes and removes to test that the workdir is writable


def has_checkpoints(workdir: str) -> bool:
    """Does `workdir/checkpoints` hold any numbered checkpoint folder (intact or not)?"""
    d = os.path.join(workdir, "checkpoints")
    try:
        return any(name.isdigit() for name in os.listdir(d))
    except OSError:
        return False


def check(workdir: str, cfg: Config, log=print, resumable: frozenset[str] = RESUMABLE_CHANGES) -> None:
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
        raise ConfigError(os_line(OSError(e.errno, e.strerror, workdir), "--workdir")) from None


def _check_existing(workdir: str, cfg: Config, resumable: set[str], log) -> None:
    try:
        # Another process of the same run may be probing the folder right now (see check): not a foreign file.
        entries = sorted(e for e in os.listdir(workdir) if not e.startswith(PROBE_PREFIX))
    except OSError as e:
        raise ConfigError(os_line(e, "--workdir")) from None
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
        if config_changes(old, cfg, resumable):
            log(f"workdir {workdir}: its run saved no checkpoint; starting it over with this config")
        return
    new = cfg.__dict__
    diff = config_changes(old, cfg, resumable)
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


def config_changes(old: dict, cfg: Config, ignore: frozenset[str] | set[str]) -> list[str]:
    """Fields of a saved config.json that differ from cfg, outside `ignore`, sorted: the one config
    comparison (the workdir guard and crnn-jax cv's finished folds). A field the saved file lacks (written
    before the field existed) counts as its default, which is what that version ran."""
    new = json.loads(cfg.to_json())
    old = {**saved_defaults(), **old}
    return [k for k in sorted(set(old) | set(new)) if k not in ignore
            and json.dumps(old.get(k)) != json.dumps(new.get(k))]


def oom_advice(cfg: Config | None) -> str:
    """What to change when training runs out of device memory (errors.explain's advice)."""
    if cfg is None:
        return DEVICE_OOM_ADVICE
    keep = ""
    if has_checkpoints(cfg.resolved_workdir()):
        keep = (f"; to resume {cfg.resolved_workdir()} as it is, try --data-placement host or a smaller "
                f"--steps-per-call (they do not change what is learned)")
    return (f"lower --batch-size (now {cfg.batch_size}) or --crop-seconds, or pass --data-placement host to keep "
            f"the data set off the device{keep}")


def places(cfg: Config | None) -> list[tuple[str, str]]:
    """(flag, folder) of the places a training run writes or reads, for errors.explain."""
    if cfg is None:
        return [("--workdir", "runs")]
    from crnn_jax.data.dataset import cache_dir  # $CRNN_JAX_CACHE or ~/.cache/crnn_jax by default

    return [("--workdir", cfg.resolved_workdir()), ("--cache-dir", cache_dir(cfg.cache_dir)), ("--data", cfg.data)]
