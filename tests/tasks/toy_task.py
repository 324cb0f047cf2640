"""A task a newcomer adds in one file, as docs/ARCHITECTURE.md's recipe says: even or odd
digit, from scikit-learn's digits, through the public registration API only."""

from __future__ import annotations

from typing import Any

import numpy as np

from paretoforge.tasks import Task, TaskData, load_task, register_task


@register_task
class DigitParity(Task):
    """Is the digit even or odd? Scored by balanced accuracy (mean recall of both classes)."""

    name = "digit-parity"
    metrics = {"balanced_accuracy": "maximize"}
    sources = ("recipe",)
    modality = "vision"

    def load(self, heldout_fraction: float = 0.25, seed: int = 0) -> TaskData:
        d = load_task("digits", heldout_fraction=heldout_fraction, seed=seed)
        return TaskData(name=self.name, x_train=d.x_train, y_train=d.y_train % 2,
                        x_heldout=d.x_heldout, y_heldout=d.y_heldout % 2, num_classes=2,
                        input_name=d.input_name, metric="balanced_accuracy",
                        preprocessing=d.preprocessing + "; label = digit % 2", split=d.split)

    def score(self, outputs: np.ndarray, data: TaskData, state: Any) -> float:
        pred, y = outputs.argmax(-1), data.y_heldout
        return float(np.mean([(pred[y == c] == c).mean() for c in (0, 1)]))
