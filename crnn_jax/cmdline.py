"""What every command shares: one parser whose errors are one line, help that shows each default, the one
place a failure becomes one line and an exit status (`run`), and the training flags (and `--set FIELD=VALUE`)
-> Config that `crnn-jax train` and `crnn-jax cv` both use.

Exit statuses: 0 done; 1 the machine failed (out of memory, disk full, no permission) or training diverged;
2 bad input (a flag, preset, data, workdir, checkpoint or model file); 130 interrupted.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

from crnn_jax import config as config_lib
from crnn_jax.config import Config
from crnn_jax.errors import ConfigError, Diverged, UserError, explain


class HelpFormatter(argparse.HelpFormatter):
    """Every flag's help ends with its default, unless the text already says it or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.option_strings and action.default not in (None, False, argparse.SUPPRESS)
                and "default" not in text):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (a ConfigError, printed by `run`) instead of the usage block."""

    def __init__(self, prog: str, description: str, **kw):
        super().__init__(prog=prog, description=description, formatter_class=HelpFormatter, allow_abbrev=False, **kw)

    def error(self, message: str):
        raise ConfigError(message)


def run(prog: str, parse: Callable[[], argparse.Namespace], work: Callable[[argparse.Namespace], int | None], *,
        places: Callable[[argparse.Namespace | None], Sequence[tuple[str, str]]] = lambda args: (),
        oom_advice: Callable[[argparse.Namespace | None], str] | None = None, interrupted: str = "") -> int:
    """A command: parse() -> args, work(args) -> its exit status (None = 0); every failure a user can act on ->
    `prog: error: <one line>` on stderr and its status (module docstring). places(args): (flag, folder) pairs
    naming where a failing path lives (errors.explain); oom_advice(args): what to change when the device runs
    out of memory; interrupted: what Ctrl-C leaves behind. args is None when parsing itself failed."""
    args = None
    try:
        args = parse()
        return int(work(args) or 0)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"{prog}: stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted" + (f"; {interrupted}" if interrupted else ""), file=sys.stderr)
        return 130
    except Exception as e:  # out of memory, a full disk, permissions: one line; anything else is a bug
        line = explain(e, places(args), *((oom_advice(args),) if oom_advice else ()))
        if line is None:
            raise
        print(f"{prog}: error: {line}", file=sys.stderr)
        return 1


# --- the training flags: crnn-jax train and crnn-jax cv --------------------------------------------------------
def ints(text: str) -> tuple[int, ...]:
    """'32,64,64,64' -> (32, 64, 64, 64)."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers, e.g. 32,64,64,64") from None


FLAGS = {  # flag -> (Config field, type)
    "--data": ("data", str), "--model": ("model", str), "--head": ("head", str), "--epochs": ("epochs", int),
    "--max-steps": ("max_steps", int), "--batch-size": ("batch_size", int), "--crop-seconds": ("crop_seconds", float),
    "--learning-rate": ("learning_rate", float), "--dropout": ("dropout", float), "--seed": ("seed", int),
    "--workdir": ("workdir", str), "--log-every": ("log_every", int), "--checkpoint-every": ("checkpoint_every", int),
    "--eval-every": ("eval_every", int), "--split": ("split", str), "--fold": ("fold", int),
    "--group-by": ("group_by", str), "--test-data": ("test_data", str), "--workers": ("workers", int),
    "--precision": ("precision", str), "--steps-per-call": ("steps_per_call", int), "--cache-dir": ("cache_dir", str),
    "--data-placement": ("data_placement", str),
    "--eval-hop-seconds": ("eval_hop_seconds", float), "--gain-db": ("gain_db", float),
    "--lr-schedule": ("lr_schedule", str), "--sample-rate": ("sample_rate", int), "--n-mels": ("n_mels", int),
    "--conv-channels": ("conv_channels", ints),
}

# Config field -> what the flag sets, with its unit (the default is appended from the config itself).
HELP = {
    "data": "'synthetic', a folder of genre sub-folders, or tfds:gtzan[@DATA_DIR]",
    "model": "crnn | cnn", "head": "softmax (cross-entropy) | sigmoid (one binary output per genre)",
    "epochs": "epochs (every training song once per epoch, one random crop each)",
    "max_steps": "training steps in all (overrides --epochs)",
    "batch_size": "examples per step, global over all devices and processes",
    "crop_seconds": "training and evaluation window, s", "learning_rate": "Algorithm 8.6's global learning rate",
    "dropout": "every dropout rate, in [0, 1) (default: the model's own per-layer rates)",
    "seed": "seed of parameters, crops, gains and dropout", "workdir": "run folder (default runs/<model>-<data>-seed<seed>)",
    "log_every": "steps between train-metric lines", "checkpoint_every": "steps between checkpoints",
    "eval_every": "steps between validation passes (0 = once per epoch)",
    "split": "random | fault-filtered | kfold:K | all (every song trains; tested on the test data folder) | a folder "
             "with train.txt/valid.txt/test.txt",
    "fold": "test fold of kfold:K",
    "test_data": "with --split all: a folder whose every song is the test set (e.g. other artists, another "
                 "recording chain) (default: none)",
    "group_by": "keep each group's songs on one side of random and kfold splits: artist | album | folder "
                "(tags, else the folder above the file; default: none, songs split one by one)",
    "workers": "processes decoding a folder into the cache (0 = one per CPU core, fewer for a small folder)",
    "precision": "fp32 | bf16 (bf16 convolutions and matmuls)", "steps_per_call": "training steps fused into one device call",
    "cache_dir": "decoded-audio cache folder (default $CRNN_JAX_CACHE or ~/.cache/crnn_jax)",
    "data_placement": "auto | device (data set resident on every device) | host (streamed)",
    "eval_hop_seconds": "hop between evaluation windows, s (default: the crop, no overlap)",
    "gain_db": "random gain augmentation, uniform in +-GAIN_DB dB (0: none)",
    "lr_schedule": "constant | cosine (decayed to 0 over the run)", "sample_rate": "Hz every file is resampled to",
    "n_mels": "mel bands (the conv blocks' frequency pools must fit: their product divides it)",
    "conv_channels": "channels per conv block, comma list, e.g. 32,64,64,64 (one per frequency pool)",
}


def _default_text(field: str) -> str:
    """'default X' from Config, plus the CPU/GPU defaults of a plain run where they differ."""
    base = getattr(Config(), field)
    per = {b: getattr(config_lib.default_config(b), field) for b in ("cpu", "gpu")}
    show = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else "none" if v is None else str(v)  # noqa: E731
    if per["cpu"] == per["gpu"] == base:
        return f"default {show(base) or 'none'}"
    return f"default without --config: {show(per['cpu'])} on CPU, {show(per['gpu'])} on GPU"


def flag_help(field: str) -> str:
    text = HELP.get(field, field.replace("_", " "))
    return text if "default" in text else f"{text} ({_default_text(field)})"


def add_training_flags(p: argparse.ArgumentParser, *, owned: dict[str, str] | None = None) -> None:
    """--config, every training flag and --set on `p`; `owned` fields (set by the caller itself) are left out."""
    owned = owned or {}
    p.add_argument("--config", help="preset file, e.g. experiments/gtzan70.py (default: the built-in synthetic set, "
                   "sized for this machine's backend)")
    for flag, (field, typ) in FLAGS.items():
        if field not in owned:
            p.add_argument(flag, type=typ, default=None, dest=field, metavar=field.upper(), help=flag_help(field))
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="set_fields",
                   help="any Config field (crnn_jax/config.py), repeatable, applied after the flags above; "
                        "tuples as comma lists, None where allowed (default: none)")


def config_of(args: argparse.Namespace, backend: Callable[[], str], *, owned: dict[str, str] | None = None) -> Config:
    """Parsed flags -> Config: the preset (--config, else the default for `backend()`), then each flag given on
    the command line replaces its field, then each --set. `owned` fields may not be --set (ConfigError)."""
    owned = owned or {}
    base = config_lib.load_preset(args.config) if args.config else config_lib.default_config(backend())
    overrides = {f: getattr(args, f) for f, _ in FLAGS.values() if getattr(args, f, None) is not None}
    for text in args.set_fields:
        field, value = parse_override(text)
        if field in owned:
            raise ConfigError(f"--set {field}: the driver sets {field} itself (use {owned[field]})")
        overrides[field] = value
    return base.replace(**overrides)


def parse_override(text: str) -> tuple[str, Any]:
    """One `--set field=value` -> (field, value), the value parsed by the Config field's type: int, float,
    str, bool (true/false/1/0/yes/no), tuples as comma lists ("" = empty), "None" where the field allows it.
    Works for every field of Config, whoever added it. ConfigError (one line) for an unknown field or a bad value."""
    import difflib
    import typing

    name, eq, raw = text.partition("=")
    name = name.strip().replace("-", "_")
    hints = typing.get_type_hints(Config)
    if not eq or not name:
        raise ConfigError(f"--set {text!r}: write field=value, e.g. --set n_mels=64")
    if name not in hints:
        close = difflib.get_close_matches(name, list(hints), n=1)
        raise ConfigError(f"--set {text!r}: Config has no field {name!r}"
                          + (f" (did you mean {close[0]}?)" if close else f"; fields: {', '.join(hints)}"))
    try:
        return name, _parse_typed(raw.strip(), hints[name])
    except (TypeError, ValueError):
        raise ConfigError(f"--set {text!r}: {raw.strip()!r} is not a valid {_type_name(hints[name])} "
                          f"for {name}") from None


def _parse_typed(raw: str, typ: Any) -> Any:
    import types
    import typing

    args = typing.get_args(typ)
    if typing.get_origin(typ) in (typing.Union, types.UnionType):  # X | None
        if type(None) in args and raw.lower() in ("none", "null"):
            return None
        (typ,) = [a for a in args if a is not type(None)]
        args = typing.get_args(typ)
    if typing.get_origin(typ) is tuple:
        return tuple(_parse_typed(v.strip(), args[0]) for v in raw.strip("()[]").split(",") if v.strip())
    if typ is bool:
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if raw.lower() not in words:
            raise ValueError(raw)
        return words[raw.lower()]
    if typ is float:
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError(raw)
        return value
    return typ(raw)  # int, str


def _type_name(typ: Any) -> str:
    return str(typ).replace("typing.", "").replace("<class '", "").replace("'>", "")
