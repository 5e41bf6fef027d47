"""The training loop: data -> model -> pure pmapped steps -> validation, checkpoints and the run log -> test.

    results = train(cfg)        # one network; the results dict is also results.json
    train_members(cfg)          # what `python -m crnn_jax.train` runs: train() for each network of an ensemble

Read top to bottom like flax's examples/imagenet/train.py: set up (data, network, optimiser, state, resume),
then the loop (one device call of K steps, log, validate, checkpoint), then the test pass and the report.
The step itself is training/steps.py (pure); the resume bookkeeping is training/runlog.py. Every random
choice is a function of (seed, step), so a run killed anywhere and started again with the same workdir ends
with exactly the metrics of a run never interrupted.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import numpy as np

from crnn_jax import files
from crnn_jax import model as model_lib
from crnn_jax.config import Config, ConfigError
from crnn_jax.data import dataset as data_lib
from crnn_jax.data import splits
from crnn_jax.errors import Diverged
from crnn_jax.training import checkpoint as ckpt_lib
from crnn_jax.training import distributed as dist
from crnn_jax.training import feed as feed_lib
from crnn_jax.training import report
from crnn_jax.training import steps as steps_lib
from crnn_jax.training import workdir as workdir_lib
from crnn_jax.training.evaluator import Evaluator, relabel
from crnn_jax.training.runlog import RunLog, TrainMetrics

TARGET_ACCURACY = 0.9  # validation song accuracy whose first crossing results.json reports as wall time


def load_data(cfg: Config) -> tuple[data_lib.Dataset, dict[str, np.ndarray]]:
    """The config's data set and its split by song -> (Dataset, {"train", "valid", "test"} index arrays); the
    one split function (splits.make_split) for every source."""
    if cfg.data == "synthetic":
        if cfg.split != "random":
            raise ConfigError(f"--split {cfg.split!r} needs real data; the synthetic set supports 'random' only")
        ds = data_lib.synthetic(clips_per_class=cfg.synth_clips_per_class, seconds=cfg.synth_seconds,
                                sample_rate=cfg.sample_rate, seed=cfg.seed, cache=cfg.cache_dir)
        return ds, splits.make_split(cfg, ds)
    from crnn_jax.data import loaders  # real audio: decoding and caching (soundfile, PyAV, scipy)

    return loaders.load(cfg)


def load_test_data(cfg: Config, class_names: tuple[str, ...]) -> data_lib.Dataset:
    """--test-data: every song of another folder, labelled in the training data's genre order (its genres
    must be among them)."""
    from crnn_jax.data import loaders

    return relabel(loaders.load_dataset(cfg.replace(data=cfg.test_data, split="random", test_data="")), class_names)


def prepare(cfg: Config, workdir: str, log=print) -> tuple[data_lib.Dataset, dict[str, np.ndarray]]:
    """Check the workdir (workdir.check), print the config, load the data -> (Dataset, split)."""
    workdir_lib.check(workdir, cfg, log)
    log(f"config:\n{cfg.to_json()}")
    return load_data(cfg)


def train(cfg: Config, *, log=print) -> dict:
    """Run (or resume) the training the config describes -> the results dict (also results.json).

    With several processes (distributed.initialize) every process calls this; process 0 alone logs and
    writes the workdir's files, all of them train, evaluate and save checkpoints together."""
    t_start, workdir = time.time(), cfg.resolved_workdir()
    n_dev, n_proc, primary = jax.device_count(), jax.process_count(), dist.is_primary()
    if cfg.batch_size % n_dev:
        raise ConfigError(f"--batch-size {cfg.batch_size} is not divisible by the {n_dev} devices"
                          f"{f' of {n_proc} processes' if n_proc > 1 else ''}; use a multiple of {n_dev}")
    log = log if primary else (lambda *_: None)
    # Every process checks and loads; all must agree on config and data before anything is written.
    ds, split = dist.agreed(lambda: prepare(cfg, workdir, log), lambda r: dist.fingerprints(cfg, *r))
    test_ds = load_test_data(cfg, ds.class_names) if cfg.test_data else ds  # the songs the test pass scores
    test_songs = np.arange(len(test_ds), dtype=np.int64) if cfg.test_data else split["test"]
    spe = data_lib.steps_per_epoch(len(split["train"]), cfg.batch_size)
    total = cfg.max_steps or cfg.epochs * spe
    log(f"data: {cfg.data}: {len(ds)} songs, {len(ds.class_names)} classes; split {cfg.split}"
        + (f" grouped by {cfg.group_by}" if cfg.group_by else "") + ": "
        + ", ".join(f"{k} {len(v)}" for k, v in split.items()) + f"; {spe} steps/epoch, {total} steps, "
        f"{n_dev} {jax.default_backend()} device(s)" + (f" in {n_proc} processes" if n_proc > 1 else ""))

    net = model_lib.build_model(cfg, len(ds.class_names), axis_name=steps_lib.AXIS)
    tx = steps_lib.make_optimizer(cfg, total)
    state = steps_lib.create_state(net, tx, cfg.crop_samples, cfg.train_seed)
    log(f"model: {cfg.model} ({cfg.head} head), {sum(x.size for x in jax.tree.leaves(state.params)):,} "
        f"parameters, time pools {model_lib.time_pools_of(cfg)}, crop {cfg.crop_seconds} s")

    ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
    restored = ckpt.restore_intact(state, warn=lambda m: print(m, file=sys.stderr) if primary else None)
    state, start = (restored[0], int(restored[0].step)) if restored else (state, 0)
    if start:
        log(f"resumed from checkpoint at step {start}")
    if primary:  # written once a checkpoint is known to be usable (or there is none): a refusal changes nothing
        os.makedirs(workdir, exist_ok=True)
        with files.atomic(os.path.join(workdir, "config.json")) as f:
            f.write(cfg.to_json())
        files.write_json(os.path.join(workdir, "classes.json"), {"class_names": list(ds.class_names)}, None)
        files.write_json(os.path.join(workdir, "split.json"), {k: [ds.names[i] for i in v] for k, v in split.items()})
    run_log = RunLog(workdir, start, primary=primary, patience=cfg.early_stop_patience, t_start=t_start)
    best, has_valid = run_log.best, len(split["valid"]) > 0
    best_ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "best"), keep=1) if has_valid else None

    state = steps_lib.place_state(state)
    p_train = steps_lib.parallel(steps_lib.make_multi_step(
        steps_lib.make_train_step(net, tx, head=cfg.head, seed=cfg.train_seed, augment=cfg.augment,
                                  crop_samples=cfg.crop_samples), cfg.read_samples), n_broadcast=2, state_out=True)
    evaluate = Evaluator.for_training(cfg, ds, net, n_dev, dist.local_devices())
    eval_every, ckpt_every = intervals(cfg, spe)
    feed = feed_lib.make_feed(ds, cfg, split["train"], n_dev, local=dist.local_devices(), log=log)
    metrics = TrainMetrics(spe, total, start, run_log, log, ckpt)

    def validated(step: int, ev: dict) -> None:
        # Every process decides alike: a collective save. A run resumed behind a best checkpoint that its dead
        # segment already wrote finds that step there: the same state (the run is deterministic), kept.
        if run_log.eval_line(step, ev) and best.offer(step, ev["accuracy"], ev["loss"]) \
                and step not in best_ckpt.all_steps():
            best_ckpt.save(step, state)

    t0, train_seconds = time.time(), run_log.seconds_before
    chunks = feed_lib.plan(start, total, cfg.steps_per_call, [cfg.log_every, eval_every, ckpt_every])
    stopped_at = start if best.stop else None  # a run that stopped early, started again, stops at once
    for step, k, batch in feed.calls([] if best.stop else chunks):
        state, m = p_train(state, feed.audio, batch)
        done = step + k
        metrics.add(step, k, m)
        if done % cfg.log_every == 0 or done == total:
            metrics.flush()
        if done % eval_every == 0 and has_valid and done != total:
            metrics.flush()
            validated(done, evaluate(state, split["valid"]))
            stopped_at = done if best.stop else None
        if done % ckpt_every == 0 or done == total or stopped_at:
            metrics.flush()  # its seconds first: any checkpoint a run resumes from has its line
            train_seconds = run_log.seconds_before + time.time() - t0
            run_log.checkpoint_line(done, train_seconds)
            ckpt.save(done, state)
        if stopped_at:
            log(f"early stop at step {done}: {best.since} validation passes without a new best "
                f"(best: step {best.step}, accuracy {best.accuracy:.4f})")
            break
    metrics.close()
    ckpt.close()

    end = stopped_at or total
    results = {"steps": end, "train_seconds": train_seconds, "resumed_from": start or None,
               "stopped_early_at": stopped_at, "grouping": splits.describe(cfg)}
    if has_valid:
        results["valid"] = evaluate(state, split["valid"])  # of the last state
        if stopped_at is None:  # the final pass (an early stop's pass is logged already)
            validated(total, results["valid"])
    test_state, results["tested_checkpoint"], results["tested_step"] = state, "last", end
    if cfg.test_checkpoint == "best" and best.step is not None:
        if best_ckpt.latest_step() == best.step:
            test_state, results["tested_checkpoint"], results["tested_step"] = best_ckpt.restore(state), "best", best.step
        else:
            log(f"the best checkpoint (step {best.step}) is missing from {best_ckpt.directory}; testing the last")
    if best_ckpt is not None:
        best_ckpt.close()
    results["best_valid"] = best.as_dict()
    if cfg.test_data:
        evaluate = Evaluator.for_training(cfg, test_ds, net, n_dev, dist.local_devices())
    test = results["test"] = evaluate(test_state, test_songs)
    results.update(test_accuracy=test["accuracy"], test_window_accuracy=test["window_accuracy"],
                   n_test=test["n_songs"], class_names=list(ds.class_names), test_data=cfg.test_data or cfg.data,
                   test_songs=[test_ds.names[i] for i in test_songs])
    if primary:
        results["time_to_accuracy"] = run_log.time_to_accuracy(TARGET_ACCURACY)
        report.write_run_report(workdir, cfg, ds.class_names, results, run_log.metrics)
        log(f"test accuracy {test['accuracy']:.4f} by song ({test['n_songs']} songs), {test['window_accuracy']:.4f} "
            f"by window, {results['tested_checkpoint']} checkpoint (step {results['tested_step']}); "
            f"{train_seconds:.1f} s of training; results in {workdir}")
    return results


def artist_note(cfg: Config) -> str | None:
    """The reminder train_members ends with when its test songs may share artists with its training songs: a split
    by song (random or k-fold) of a user's folder without --group-by; None otherwise (the synthetic set has
    no artists; fault-filtered and --group-by keep them apart; --split all tests on another set, --test-data)."""
    if cfg.data == "synthetic" or cfg.group_by:
        return None
    if cfg.split == "random" or cfg.split.startswith("kfold:"):
        return ("note: this split keeps songs apart, not artists: songs of one artist may be on both sides, which "
                "inflates accuracy; --group-by artist keeps each artist on one side")
    return None


def intervals(cfg: Config, steps_per_epoch: int) -> tuple[int, int]:
    """Steps between validation passes and between checkpoints. Checkpoints fall on log boundaries (the
    configured interval rounded up), so a resumed run logs exactly the lines an unbroken one does."""
    return cfg.eval_every or steps_per_epoch, -(-cfg.checkpoint_every // cfg.log_every) * cfg.log_every


def train_members(cfg: Config, *, log=print) -> list[dict]:
    """Train (or resume) every network of `cfg` (Config.members: one, or an ensemble's), each as train() does
    -> their results dicts. For an ensemble, one more line: its test accuracy (each test song's mean
    log-probability over the members, report.ensemble_scores) beside each member's, and how to use it. Last,
    once, artist_note's reminder where the split may put one artist's songs on both sides."""
    members = cfg.members()
    for c in members[1:]:  # a member's workdir that cannot be used: said now, not after member 0's training
        workdir_lib.check(c.resolved_workdir(), c, log=lambda *_: None)
    results = [train(c, log=log) for c in members]
    if len(results) > 1 and dist.is_primary():
        ens = report.ensemble_scores([r["test"]["song_log_probs"] for r in results],
                                     np.asarray(results[0]["test"]["song_labels"]), len(results[0]["class_names"]))
        workdirs = " ".join(f"--workdir {c.resolved_workdir()}" for c in members)
        alone = ", ".join(f"{r['test_accuracy']:.4f}" for r in results)
        log(f"ensemble of {len(results)}: test accuracy {ens['accuracy']:.4f} by song (members alone: {alone}); "
            f"predict or evaluate with {workdirs}")
    note = artist_note(cfg)
    if note and dist.is_primary():
        log(note)  # once, last: after every member's accuracy and the ensemble's
    return results


__all__ = ["Diverged", "TARGET_ACCURACY", "artist_note", "intervals", "load_data", "prepare", "train",
           "train_members"]
