"""Model selection by validation: the best pass so far, and early stopping.

The best validation pass is the one with the highest song accuracy; among equal accuracies, the lower
validation loss; among exact ties, the earlier step. train.py offers every validation pass to a `Best`,
saves the state to `<workdir>/best/` whenever `offer` says it is a new best, and tests that checkpoint.

A resumed run rebuilds the record with `Best.replay` from the eval lines metrics.jsonl holds up to the
restored step (those lines are written before the checkpoint of their step), so the best step, its
numbers and the count of passes since then are those of an unbroken run, and early stopping stops at
the same step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable


@dataclasses.dataclass
class Best:
    """patience: validation passes without a new best before `stop` (0 = never). step: the best pass's
    step (None before any pass); accuracy, loss: its song accuracy and loss; since: passes after it."""

    patience: int = 0
    step: int | None = None
    accuracy: float = -math.inf
    loss: float = math.inf
    since: int = 0

    def offer(self, step: int, accuracy: float, loss: float) -> bool:
        """Record the validation pass at `step`; True if it is the new best."""
        if accuracy > self.accuracy or (accuracy == self.accuracy and loss < self.loss):
            self.step, self.accuracy, self.loss, self.since = step, float(accuracy), float(loss), 0
            return True
        self.since += 1
        return False

    @property
    def stop(self) -> bool:
        """Early stopping: `patience` passes in a row have not improved on the best."""
        return self.patience > 0 and self.step is not None and self.since >= self.patience

    def as_dict(self) -> dict | None:
        return None if self.step is None else {"step": self.step, "accuracy": self.accuracy, "loss": self.loss}

    @classmethod
    def replay(cls, rows: Iterable[dict], upto: int, patience: int = 0) -> "Best":
        """The record after the eval lines (metrics.jsonl rows with "eval_accuracy") of steps <= upto."""
        best = cls(patience)
        for r in rows:
            if "eval_accuracy" in r and r["step"] <= upto:
                best.offer(r["step"], r["eval_accuracy"], r["eval_loss"])
        return best
