"""What a task hands the rest of paretoforge: preprocessed arrays, a held-out split, provenance.

numpy is only imported for type checking here, so that importing :mod:`paretoforge.tasks` (which
the CLI does to list tasks) stays instant.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paretoforge.exceptions import SpecError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["TaskData", "check_split_params", "classification_accuracy"]


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no truth value, compare by identity
class TaskData:
    """A task's data, already preprocessed into model inputs, with its held-out split.

    The held-out split (``x_heldout``, ``y_heldout``) is where candidates are scored. Nothing in
    paretoforge trains on it: not the base model, not importance scores, not distillation.

    Attributes:
        name: Registered task name, e.g. ``"digits"``.
        x_train: Model inputs used for training: one array (e.g. float32 ``(N, 1, 8, 8)``
            pixel values), or, for models with several inputs, input name -> array (e.g.
            int64 ``input_ids`` and ``attention_mask``, each ``(N, T)``).
        y_train: int64 labels of ``x_train``.
        x_heldout: Held-out inputs (same form as ``x_train``), used only to measure quality.
        y_heldout: int64 labels of ``x_heldout``.
        num_classes: Number of classes of the labels.
        input_name: Name of the model's (first) input argument and ONNX input, e.g.
            ``"pixel_values"`` or ``"input_ids"``.
        metric: Name of the quality metric, e.g. ``"accuracy"``.
        preprocessing: Exact human-readable account of the preprocessing, for the manifest.
        split: JSON-able account of the split: method, seed, fraction, sizes and the sha256 of
            the sorted held-out indices.

    Example:
        >>> from paretoforge.tasks import load_task
        >>> task = load_task("digits", heldout_fraction=0.25, seed=0)
        >>> task.x_train.shape[1:], task.num_classes, task.metric
        ((1, 8, 8), 10, 'accuracy')
    """

    name: str
    x_train: np.ndarray | dict[str, np.ndarray]
    y_train: np.ndarray
    x_heldout: np.ndarray | dict[str, np.ndarray]
    y_heldout: np.ndarray
    num_classes: int
    input_name: str
    metric: str
    preprocessing: str
    split: dict[str, Any]

    @property
    def input_names(self) -> tuple[str, ...]:
        """Names of the model's inputs, in order."""
        if isinstance(self.x_train, dict):
            return tuple(self.x_train)
        return (self.input_name,)

    def feeds(self, split: str) -> dict[str, np.ndarray]:
        """Inputs of ``split`` (``"train"`` or ``"heldout"``) as ``{input name: array}``."""
        if split not in ("train", "heldout"):
            raise SpecError(f"Unknown split {split!r}. Available: train, heldout.")
        x = self.x_train if split == "train" else self.x_heldout
        return dict(x) if isinstance(x, dict) else {self.input_name: x}

    def describe(self) -> dict[str, Any]:
        """JSON-able provenance of this task (no arrays), e.g. for a manifest."""
        shapes = {k: list(v.shape[1:]) for k, v in self.feeds("train").items()}
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "input_name": self.input_name,
            "input_shape": shapes[self.input_name],
            "input_shapes": shapes,
            "metric": self.metric,
            "preprocessing": self.preprocessing,
            "split": dict(self.split),
        }


def check_split_params(task: str, heldout_fraction: Any, seed: Any) -> None:
    """Raise SpecError unless ``0 < heldout_fraction < 1`` and ``seed`` is an integer >= 0."""
    if (
        isinstance(heldout_fraction, bool)
        or not isinstance(heldout_fraction, (int, float))
        or not math.isfinite(heldout_fraction)
        or not 0.0 < heldout_fraction < 1.0
    ):
        raise SpecError(
            f"{task}: heldout_fraction must be a number strictly between 0 and 1, got "
            f"{heldout_fraction!r}. Use e.g. 0.25."
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise SpecError(f"{task}: seed must be an integer >= 0, got {seed!r}.")


def classification_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows of ``logits`` ``(N, C)`` whose arg-max is the label ``(N,)``."""
    return float((logits.argmax(-1) == labels).mean())
