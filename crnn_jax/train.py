"""`python -m crnn_jax.train`: train a CRNN or CNN genre classifier, evaluate it by song, write a report.

    python -m crnn_jax.train                                  # built-in synthetic music, a few minutes on CPU
    python -m crnn_jax.train --config experiments/gtzan.py --data /path/to/genres
    python -m crnn_jax.train --workdir runs/x                 # again: resumes from the newest checkpoint
    python -m crnn_jax.train --coordinator HOST:PORT --num-processes 2 --process-id 0   # and 1 on host 2:
                                                              # one run over several hosts (docs/distributed.md)

The workdir gets config.json, metrics.jsonl, checkpoints/ (orbax), results.json, confusion.png, curves.png.
Every random choice is a function of (seed, step), so a run killed at any point and started again with
the same workdir ends with exactly the metrics of a run never interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

from crnn_jax.training import augment as augment_lib
from crnn_jax.training import checkpoint as ckpt_lib
from crnn_jax import config as config_lib
from crnn_jax.data import dataset as data_lib
from crnn_jax.training import distributed as dist
from crnn_jax.training import feed as feed_lib
from crnn_jax import model as model_lib
from crnn_jax.training import report
from crnn_jax.training import selection
from crnn_jax.training import steps as steps_lib
from crnn_jax.training import workdir as workdir_lib
from crnn_jax.config import Config, ConfigError
from crnn_jax.data.dataset import DataError
from crnn_jax.cli import HelpFormatter
from crnn_jax.evaluate import Evaluator


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


# Validation accuracy (by song) whose first crossing results.json reports as wall time from the start.
TARGET_ACCURACY = 0.9

# Fields a resumed run may change: they decide how long and how often, not what is learned.
RESUMABLE_CHANGES = {"epochs", "max_steps", "log_every", "checkpoint_every", "eval_every", "workdir", "cache_dir",
                     "steps_per_call", "data_placement", "device_data_gb", "test_checkpoint",
                     "early_stop_patience", "ensemble"}


def load_data(cfg: Config) -> tuple[data_lib.Dataset, dict[str, np.ndarray]]:
    """The config's data set and its split by song -> (Dataset, {"train", "valid", "test"} index arrays)."""
    if cfg.data == "synthetic":
        ds = data_lib.synthetic(clips_per_class=cfg.synth_clips_per_class, seconds=cfg.synth_seconds,
                                sample_rate=cfg.sample_rate, seed=cfg.seed, cache=cfg.cache_dir)
        if cfg.split != "random":
            raise ConfigError(f"--split {cfg.split!r} needs real data; the synthetic set supports 'random' only")
        split = data_lib.random_split(ds.labels, test_fraction=cfg.test_fraction,
                                      valid_fraction=cfg.valid_fraction, seed=cfg.seed)
        return ds, split
    from crnn_jax.data import loaders  # real audio: decoding, caching and split lists live there

    return loaders.load(cfg)


def check_workdir_config(workdir: str, cfg: Config, log=print) -> None:
    """Refuse a workdir that is a file, another program's, unwritable, or holds checkpoints of a different
    config (anything outside RESUMABLE_CHANGES, or the total of a cosine schedule): see workdir.py."""
    workdir_lib.check(workdir, cfg, RESUMABLE_CHANGES, log)


def prepare(cfg: Config, workdir: str, log=print) -> tuple[data_lib.Dataset, dict[str, np.ndarray]]:
    """Check the workdir, print the config, load the data -> (Dataset, split)."""
    check_workdir_config(workdir, cfg, log)
    log(f"config:\n{cfg.to_json()}")
    return load_data(cfg)


def train(cfg: Config, *, log=print) -> dict:
    """Run (or resume) the training the config describes; returns the results dict also saved as JSON.

    With several processes (distributed.initialize) every process calls this; process 0 alone logs and
    writes the workdir's files, all of them train, evaluate and save checkpoints together.
    """
    t_start = time.time()
    workdir = cfg.resolved_workdir()
    n_dev, n_proc, primary = jax.device_count(), jax.process_count(), dist.is_primary()
    if cfg.batch_size % n_dev:
        raise ConfigError(f"--batch-size {cfg.batch_size} is not divisible by the {n_dev} devices"
                          f"{f' of {n_proc} processes' if n_proc > 1 else ''}; use a multiple of {n_dev}")
    if not primary:
        log = lambda *_: None  # noqa: E731
    # Every process checks and loads; all must agree on config and data before anything is written.
    ds, split = dist.agreed(lambda: prepare(cfg, workdir, log), lambda r: dist.fingerprints(cfg, *r))
    local = dist.local_devices()
    train_songs = split["train"]
    spe = data_lib.steps_per_epoch(len(train_songs), cfg.batch_size)
    total = cfg.max_steps or cfg.epochs * spe
    log(f"data: {cfg.data}: {len(ds)} songs, {len(ds.class_names)} classes; split {cfg.split}: "
        + ", ".join(f"{k} {len(v)}" for k, v in split.items()) + f"; {spe} steps/epoch, {total} steps, "
        f"{n_dev} {jax.default_backend()} device(s)" + (f" in {n_proc} processes" if n_proc > 1 else ""))

    net = model_lib.build_model(cfg, len(ds.class_names), axis_name=steps_lib.AXIS)
    tx = steps_lib.make_optimizer(cfg, total)
    state = steps_lib.create_state(net, tx, cfg.crop_samples, cfg.train_seed)
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    log(f"model: {cfg.model} ({cfg.head} head), {n_params:,} parameters, time pools "
        f"{model_lib.time_pools_of(cfg)}, crop {cfg.crop_seconds} s")

    ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    # Wall times live apart from metrics.jsonl, which two runs of one config reproduce bit for bit.
    timing_path = os.path.join(workdir, "timing.jsonl")
    train_time_path = os.path.join(workdir, workdir_lib.TRAIN_TIME)  # training seconds at each checkpoint
    start = 0
    restored = ckpt.restore_intact(state, warn=lambda m: print(m, file=sys.stderr) if primary else None)
    if restored is not None:
        state, start = restored[0], int(restored[0].step)
        log(f"resumed from checkpoint at step {start}")
    if primary:  # written once a checkpoint is known to be usable (or there is none): a refusal changes nothing
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(cfg.to_json())
        with open(os.path.join(workdir, "classes.json"), "w") as f:  # what predict.py needs to name its outputs
            json.dump({"class_names": list(ds.class_names)}, f)
        with open(os.path.join(workdir, "split.json"), "w") as f:
            json.dump({k: [ds.names[i] for i in v] for k, v in split.items()}, f, indent=1)
        for path in (metrics_path, timing_path, train_time_path):  # drop what came after the checkpoint
            if os.path.exists(path):
                report.truncate_metrics(path, start)
    # Segments before this one: their training seconds, and the validation lines already written (a rerun of
    # a finished run, or one killed before results.json, must not write its last validation twice). Steps
    # after `start` are left out here too, not only by process 0's truncation above: another process may read
    # the file before that, and a process that saw a line the others did not would skip a collective save.
    seconds_before = workdir_lib.train_seconds_at(report.read_metrics(train_time_path), start)
    logged = {p: {r["step"] for r in report.read_metrics(p) if "eval_accuracy" in r and r["step"] <= start}
              for p in (metrics_path, timing_path)}
    # The best validation pass up to the checkpoint, from the eval lines written before it (selection.py).
    best = selection.Best.replay(report.read_metrics(metrics_path) if start and os.path.exists(metrics_path)
                                 else [], start, cfg.early_stop_patience)
    best_ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "best"), keep=1) if len(split["valid"]) else None
    # A resumed run counts on from the wall time logged at its checkpoint's step (time spent dead excluded).
    clock0 = t_start
    if primary and os.path.exists(timing_path):
        clock0 -= max((r["seconds"] for r in report.read_metrics(timing_path)), default=0.0)

    state = steps_lib.place_state(state)
    p_train = steps_lib.parallel(
        steps_lib.make_multi_step(steps_lib.make_train_step(net, tx, head=cfg.head, seed=cfg.train_seed,
                                                            augment=augment_lib.settings_of(cfg)), cfg.read_samples),
        n_broadcast=2, state_out=True)
    evaluate = Evaluator(cfg, ds, steps_lib.parallel(steps_lib.make_eval_step(net, head=cfg.head, gather=True),
                                                     state_out=False), n_dev, local)
    eval_every, ckpt_every = intervals(cfg, spe)
    feed = feed_lib.make_feed(ds, cfg, train_songs, n_dev, local=local, log=log)
    append_metrics = report.append_metrics if primary else lambda *_: None

    def log_eval(step: int, ev: dict) -> None:
        if step not in logged[timing_path]:
            append_metrics(timing_path, {"step": step, "seconds": round(time.time() - clock0, 3),
                                         "eval_accuracy": ev["accuracy"]})
        if step in logged[metrics_path]:  # a rerun's pass that the record replayed already: offered before
            return
        append_metrics(metrics_path, {"step": step, "eval_loss": ev["loss"], "eval_accuracy": ev["accuracy"],
                                      "eval_window_accuracy": ev["window_accuracy"]})
        # Every process decides alike: a collective save. A run resumed behind a best checkpoint that its dead
        # segment already wrote finds that step there: the same state (the run is deterministic), kept.
        if best.offer(step, ev["accuracy"], ev["loss"]) and step not in best_ckpt.all_steps():
            best_ckpt.save(step, state)

    pending: list = []  # (first step, device metrics [devices, k]) not yet checked and written

    def flush() -> None:
        if not pending:
            return
        got = jax.device_get([m for _, m in pending])  # leaves [devices, k]: equal over devices after the pmean
        losses = np.concatenate([m["loss"][0] for m in got])
        first = pending[0][0]
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            raise Diverged(f"non-finite loss at step {first + bad[0] + 1}; the last good checkpoint "
                           f"(step {ckpt.latest_step()}) is kept in {ckpt.directory}")
        last = first + len(losses)
        row = {"step": last, "epoch": last / spe, "train_loss": float(losses.mean()),
               "train_accuracy": float(np.concatenate([m["accuracy"][0] for m in got]).mean())}
        append_metrics(metrics_path, row)
        pending.clear()
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row['train_accuracy']:.2f}")
        if not bar.interactive:
            log(f"step {row['step']}/{total}  loss {row['train_loss']:.4f}  accuracy {row['train_accuracy']:.3f}")

    bar = _progress(total, start, primary)
    t0, train_seconds = time.time(), seconds_before  # up to the last checkpoint, every segment
    chunks = feed_lib.plan(start, total, cfg.steps_per_call, [cfg.log_every, eval_every, ckpt_every])
    stopped_at = start if best.stop else None  # a run that stopped early, started again, stops at once
    for step, k, batch in feed.calls([] if best.stop else chunks):
        state, m = p_train(state, feed.audio, batch)
        done = step + k
        pending.append((step, m))
        bar.update(k)
        if done % cfg.log_every == 0 or done == total:
            flush()
        if done % eval_every == 0 and len(split["valid"]) and done != total:
            flush()
            log_eval(done, evaluate(state, split["valid"]))
            stopped_at = done if best.stop else None
        if done % ckpt_every == 0 or done == total or stopped_at:
            flush()  # its seconds first: any checkpoint a run resumes from has its line
            train_seconds = seconds_before + time.time() - t0
            append_metrics(train_time_path, {"step": done, "train_seconds": train_seconds})
            ckpt.save(done, state)
        if stopped_at:
            log(f"early stop at step {done}: {best.since} validation passes without a new best "
                f"(best: step {best.step}, accuracy {best.accuracy:.4f})")
            break
    bar.close()
    ckpt.close()

    end = stopped_at or total
    results = {"steps": end, "train_seconds": train_seconds, "resumed_from": start or None,
               "stopped_early_at": stopped_at}
    if len(split["valid"]):
        results["valid"] = evaluate(state, split["valid"])  # of the last state
        if stopped_at is None:  # the final pass (an early stop's pass is logged already)
            log_eval(total, results["valid"])
    test_state, results["tested_checkpoint"], results["tested_step"] = state, "last", end
    if cfg.test_checkpoint == "best" and best.step is not None:
        if best_ckpt.latest_step() == best.step:
            test_state, results["tested_checkpoint"], results["tested_step"] = \
                best_ckpt.restore(state), "best", best.step
        else:
            log(f"the best checkpoint (step {best.step}) is missing from {best_ckpt.directory}; testing the last")
    if best_ckpt is not None:
        best_ckpt.close()
    results["best_valid"] = best.as_dict()
    results["test"] = evaluate(test_state, split["test"])
    test = results["test"]
    results.update(test_accuracy=test["accuracy"], test_window_accuracy=test["window_accuracy"],
                   n_test=test["n_songs"], class_names=list(ds.class_names),
                   test_songs=[ds.names[i] for i in split["test"]])
    if not primary:
        return results
    results["time_to_accuracy"] = time_to_accuracy(report.read_metrics(timing_path), TARGET_ACCURACY)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    report.plot_confusion(np.array(test["confusion"]), ds.class_names, os.path.join(workdir, "confusion.png"),
                          f"{cfg.model.upper()} test songs: accuracy {test['accuracy']:.3f} (n={test['n_songs']})")
    report.plot_curves(report.read_metrics(metrics_path), os.path.join(workdir, "curves.png"))
    log(f"test accuracy {test['accuracy']:.4f} by song ({test['n_songs']} songs), {test['window_accuracy']:.4f} "
        f"by window, {results['tested_checkpoint']} checkpoint (step {results['tested_step']}); "
        f"{train_seconds:.1f} s of training; results in {workdir}")
    return results


def intervals(cfg: Config, steps_per_epoch: int) -> tuple[int, int]:
    """Steps between validation passes and between checkpoints. Checkpoints fall on log boundaries (the
    configured interval rounded up), so a resumed run logs exactly the lines an unbroken one does."""
    return cfg.eval_every or steps_per_epoch, -(-cfg.checkpoint_every // cfg.log_every) * cfg.log_every


def time_to_accuracy(timing: list[dict], target: float) -> dict:
    """The first validation pass at or above `target` song accuracy, from timing.jsonl rows -> {"target",
    "step", "seconds"} (seconds: wall time from the start of train(), data loading and compilation
    included; after a kill and resume, the time from the last validation pass before the checkpoint to
    the restart is not counted; step and seconds None if never reached)."""
    hit = next((r for r in timing if r["eval_accuracy"] >= target), None)
    return {"target": target, "step": hit and hit["step"], "seconds": hit and hit["seconds"]}


def _progress(total: int, start: int, primary: bool = True):
    """A tqdm bar on process 0's terminal; a silent stand-in (plain log lines instead) otherwise."""
    from tqdm.auto import tqdm

    interactive = primary and sys.stderr.isatty()
    bar = tqdm(total=total, initial=start, disable=not interactive, unit="step", dynamic_ncols=True)
    bar.interactive = interactive
    return bar


# --- command line ------------------------------------------------------------------------------------------
def _ints(text: str) -> tuple[int, ...]:
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
    "--precision": ("precision", str), "--steps-per-call": ("steps_per_call", int), "--cache-dir": ("cache_dir", str),
    "--data-placement": ("data_placement", str),
    "--eval-hop-seconds": ("eval_hop_seconds", float), "--gain-db": ("gain_db", float),
    "--lr-schedule": ("lr_schedule", str), "--sample-rate": ("sample_rate", int), "--n-mels": ("n_mels", int),
    "--conv-channels": ("conv_channels", _ints),
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
    "split": "random | fault-filtered | kfold:K | a folder with train.txt/valid.txt/test.txt", "fold": "test fold of kfold:K",
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
        return f"default {show(base)}"
    return f"default without --config: {show(per['cpu'])} on CPU, {show(per['gpu'])} on GPU"


def flag_help(field: str) -> str:
    text = HELP.get(field, field.replace("_", " "))
    return text if "default" in text else f"{text} ({_default_text(field)})"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line naming the problem, not the usage block
        raise ConfigError(message)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, parsed without touching JAX (distributed.initialize must come first)."""
    p = _Parser(prog="crnn-jax train", formatter_class=HelpFormatter,
                description=__doc__.split("\n")[0] + " Flags override the --config preset (or the default for "
                "this machine) field by field; the defaults shown are a plain run's.")
    p.add_argument("--config", help="preset file, e.g. experiments/seed_report.py (default: the built-in "
                   "synthetic set, sized for this machine's backend)")
    for flag, (field, typ) in FLAGS.items():
        p.add_argument(flag, type=typ, default=None, dest=field, metavar=field.upper(), help=flag_help(field))
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="set_fields",
                   help="any Config field (crnn_jax/config.py), repeatable, applied after the flags above; "
                        "tuples as comma lists, None where allowed (default: none)")
    dist.add_flags(p)  # launch parameters: not Config fields, never in config.json
    return p.parse_args(argv)


def config_of(args: argparse.Namespace) -> Config:
    """Parsed flags -> Config: the preset (--config, else the default for this machine's backend), then each
    flag given on the command line replaces its field."""
    base = config_lib.load_preset(args.config) if args.config else config_lib.default_config(jax.default_backend())
    overrides = {f: getattr(args, f) for f, _ in FLAGS.values() if getattr(args, f) is not None}
    overrides.update(config_lib.parse_override(t) for t in getattr(args, "set_fields", []))
    return base.replace(**overrides)


def parse_config(argv: list[str] | None = None) -> Config:
    """Flags -> Config (see config_of); launch flags are accepted and left out."""
    return config_of(parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    cfg = None
    try:
        args = parse_args(argv)
        dist.initialize(dist.launch_of(args))  # before any other JAX call, jax.default_backend() included
        cfg = config_of(args)
        train(cfg)
    except (ConfigError, DataError, ckpt_lib.CheckpointError) as e:
        print(f"crnn_jax.train: error: {e}", file=sys.stderr)
        return 2
    except (OSError, MemoryError, jax.errors.JaxRuntimeError) as e:  # out of memory, disk full, permissions
        line = workdir_lib.explain(e, cfg)
        if line is None:
            raise
        print(f"crnn_jax.train: error: {line}", file=sys.stderr)
        return 1
    except Diverged as e:
        print(f"crnn_jax.train: stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("crnn_jax.train: interrupted; rerun with the same --workdir to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
