"""The run log: what a workdir records of a run besides its checkpoints, kept right across kills and resumes.

    metrics.jsonl     train lines {step, epoch, train_loss, train_accuracy}; eval lines {step, eval_loss,
                      eval_accuracy, eval_window_accuracy}. Two runs of one config write it bit for bit alike.
    timing.jsonl      {step, seconds, eval_accuracy}: wall seconds from the start at every validation pass
                      (apart from metrics.jsonl, which must not hold wall times to stay reproducible).
    train_time.jsonl  {step, train_seconds}: training seconds summed over every segment, at each checkpoint.

A run resumed from checkpoint `start` drops every line after `start` (process 0 truncates), so the files end
as an unbroken run's do; a validation pass already written (a rerun of a finished run) is not written twice;
the best validation pass so far is replayed from the eval lines (selection.Best.replay); the wall clock counts
on from the last validation pass before the checkpoint, and training seconds from the checkpoint's line.
Every process reads the same record (only steps <= start), so all take the same collective decisions; only
process 0 writes.
"""

from __future__ import annotations

import json
import os
import sys
import time

from crnn_jax import files
from crnn_jax.errors import Diverged
from crnn_jax.training import selection

METRICS, TIMING, TRAIN_TIME = "metrics.jsonl", "timing.jsonl", "train_time.jsonl"


def read_rows(path: str) -> list[dict]:
    """All complete JSON lines of a log file (a torn last line from a kill is ignored; [] if missing)."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def append_row(path: str, row: dict) -> None:
    """One JSON line at the end of a log file."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def truncate_rows(path: str, last_step: int) -> None:
    """Keep only the lines with step <= last_step (atomically)."""
    rows = [r for r in read_rows(path) if r.get("step", 0) <= last_step]
    with files.atomic(path) as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def train_seconds_at(rows: list[dict], step: int) -> float:
    """Training seconds of every segment up to checkpoint `step`, from train_time.jsonl rows (0 if none)."""
    return max((r["train_seconds"] for r in rows if r.get("step", 0) <= step), default=0.0)


class RunLog:
    """The three log files of `workdir` for a run (re)started at checkpoint `start`.

    primary: this process writes (process 0); t_start: time.time() when the run started.
    After construction: best (the replayed selection.Best), seconds_before (training seconds of the segments
    before this one), clock0 (the wall-clock origin, earlier by the time logged before the checkpoint).
    """

    def __init__(self, workdir: str, start: int, *, primary: bool, patience: int, t_start: float):
        self.metrics, self.timing, self.train_time = (os.path.join(workdir, n) for n in (METRICS, TIMING, TRAIN_TIME))
        self.primary = primary
        if primary:
            for path in (self.metrics, self.timing, self.train_time):
                if os.path.exists(path):
                    truncate_rows(path, start)
        # Steps after `start` are left out here too, not only by process 0's truncation: another process may
        # read before it, and a process that saw a line the others did not would skip a collective save.
        self.seconds_before = train_seconds_at(read_rows(self.train_time), start)
        self._logged = {p: {r["step"] for r in read_rows(p) if "eval_accuracy" in r and r["step"] <= start}
                        for p in (self.metrics, self.timing)}
        self.best = selection.Best.replay(read_rows(self.metrics) if start else [], start, patience)
        self.clock0 = t_start - (max((r["seconds"] for r in read_rows(self.timing)), default=0.0) if primary else 0.0)

    def _append(self, path: str, row: dict) -> None:
        if self.primary:
            append_row(path, row)

    def train_line(self, row: dict) -> None:
        """A train-metrics line (step, epoch, train_loss, train_accuracy)."""
        self._append(self.metrics, row)

    def eval_line(self, step: int, ev: dict) -> bool:
        """A validation pass at `step` (an Evaluator dict): its timing line and, unless a rerun logged it
        already, its metrics line. -> True when the pass is new, i.e. the caller offers it to `best`."""
        if step not in self._logged[self.timing]:
            self._append(self.timing, {"step": step, "seconds": round(time.time() - self.clock0, 3),
                                       "eval_accuracy": ev["accuracy"]})
        if step in self._logged[self.metrics]:  # replayed into `best` already
            return False
        self._append(self.metrics, {"step": step, "eval_loss": ev["loss"], "eval_accuracy": ev["accuracy"],
                                    "eval_window_accuracy": ev["window_accuracy"]})
        return True

    def checkpoint_line(self, step: int, train_seconds: float) -> None:
        """Training seconds at the checkpoint of `step` (written before the checkpoint itself)."""
        self._append(self.train_time, {"step": step, "train_seconds": train_seconds})

    def time_to_accuracy(self, target: float) -> dict:
        """time_to_accuracy of this run's timing.jsonl."""
        return time_to_accuracy(read_rows(self.timing), target)


def time_to_accuracy(timing: list[dict], target: float) -> dict:
    """The first validation pass at or above `target` song accuracy, from timing.jsonl rows -> {"target",
    "step", "seconds"} (seconds: wall time from the start, data loading and compilation included, time spent
    dead between a kill and the resume excluded; step and seconds None if never reached)."""
    hit = next((r for r in timing if r["eval_accuracy"] >= target), None)
    return {"target": target, "step": hit and hit["step"], "seconds": hit and hit["seconds"]}


class TrainMetrics:
    """The device metrics of training calls, checked and written a log interval at a time.

    add(first step, metrics) keeps a call's device arrays without waiting for them; flush() fetches them once,
    stops the run (errors.Diverged) at a non-finite loss, writes one train line (mean loss and accuracy over
    the steps since the last line) and moves the progress bar (a tqdm bar on process 0's terminal; plain log
    lines otherwise)."""

    def __init__(self, steps_per_epoch: int, total: int, start: int, run_log: RunLog, log, ckpt):
        from tqdm.auto import tqdm

        self.spe, self.total, self.run_log, self.log, self.ckpt = steps_per_epoch, total, run_log, log, ckpt
        self.pending: list = []  # (first step, device metrics {name: [devices, k]})
        self.interactive = run_log.primary and sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=start, disable=not self.interactive, unit="step", dynamic_ncols=True)

    def add(self, step: int, k: int, metrics: dict) -> None:
        """The metrics of the call of k steps from `step` (device arrays, not waited for)."""
        self.pending.append((step, metrics))
        self.bar.update(k)

    def flush(self) -> None:
        if not self.pending:
            return
        import jax
        import numpy as np

        got = jax.device_get([m for _, m in self.pending])  # leaves [devices, k]: equal over devices after the pmean
        losses = np.concatenate([m["loss"][0] for m in got])
        first = self.pending[0][0]
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            raise Diverged(f"non-finite loss at step {first + bad[0] + 1}; the last good checkpoint "
                           f"(step {self.ckpt.latest_step()}) is kept in {self.ckpt.directory}")
        last = first + len(losses)
        row = {"step": last, "epoch": last / self.spe, "train_loss": float(losses.mean()),
               "train_accuracy": float(np.concatenate([m["accuracy"][0] for m in got]).mean())}
        self.run_log.train_line(row)
        self.pending.clear()
        self.bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row['train_accuracy']:.2f}")
        if not self.interactive:
            self.log(f"step {row['step']}/{self.total}  loss {row['train_loss']:.4f}  accuracy {row['train_accuracy']:.3f}")

    def close(self) -> None:
        self.bar.close()
