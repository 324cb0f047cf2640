"""Built-in task: scikit-learn's bundled 8x8 handwritten digits (offline, 1797 images).

numpy and scikit-learn are imported inside the loader so that registering the task is free.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from paretoforge.tasks._base import (
    DEFAULT_TEST_FRACTION,
    TaskData,
    check_split_params,
    classification_accuracy,
    divide_heldout,
)
from paretoforge.tasks._contract import Task, register_task

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DigitsTask", "load_digits_task"]

PREPROCESSING = (
    "sklearn.datasets.load_digits images (8x8, values 0..16) divided by 16.0, as float32, "
    "shaped (N, 1, 8, 8); labels as int64"
)


def load_digits_task(heldout_fraction: float = 0.25, seed: int = 0,
                     test_fraction: float = DEFAULT_TEST_FRACTION) -> TaskData:
    """Load the digits task with a stratified train / validation / test split.

    Args:
        heldout_fraction: Fraction of the images held out from training, in (0, 1).
        seed: Seed of the split; the same seed always gives the same split.
        test_fraction: Fraction of the held-out images that become the test split (the
            rest are validation), in (0, 1); stratified too.

    Returns:
        The task; ``x_*`` are float32 ``(N, 1, 8, 8)`` in [0, 1], ``y_*`` int64 in 0..9, every
        split in ascending order of the original dataset index.

    Raises:
        SpecError: a fraction is not in (0, 1) or ``seed`` is not an integer.

    Example:
        >>> task = load_digits_task(heldout_fraction=0.25, seed=0)
        >>> len(task.x_train) + len(task.x_validation) + len(task.x_test)
        1797
    """
    check_split_params("digits", heldout_fraction, seed, test_fraction)

    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = np.asarray(data.images, dtype=np.float32)  # (N, 8, 8), values 0..16
    labels = np.asarray(data.target, dtype=np.int64)
    x = (images / np.float32(16.0)).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8)

    # Split indices, not arrays, so that the held-out set can be fingerprinted by index.
    idx = np.arange(len(labels))
    train_idx, heldout_idx = train_test_split(
        idx, test_size=float(heldout_fraction), random_state=int(seed), stratify=labels
    )
    train_idx = np.sort(train_idx)
    heldout_idx = np.sort(heldout_idx)
    heldout_sha = hashlib.sha256(heldout_idx.astype("<i8").tobytes()).hexdigest()
    val_idx, test_idx, division = divide_heldout(heldout_idx, labels[heldout_idx],
                                                 test_fraction, seed, task="digits")

    split = {
        "method": "sklearn.model_selection.train_test_split(stratify=labels)",
        "seed": int(seed),
        "heldout_fraction": float(heldout_fraction),
        "n_train": int(len(train_idx)),
        "n_heldout": int(len(heldout_idx)),
        "heldout_indices_sha256": heldout_sha,
        "sha256_of": "sorted indices of the split into load_digits() as little-endian int64 "
                     "bytes",
        # The indices themselves, so that anyone can rebuild the held-out set from
        # sklearn.datasets.load_digits() without paretoforge.
        "heldout_indices": [int(i) for i in heldout_idx],
        **division,
        "test_indices": [int(i) for i in test_idx],
    }
    return TaskData(
        name="digits",
        x_train=np.ascontiguousarray(x[train_idx]),
        y_train=labels[train_idx],
        x_validation=np.ascontiguousarray(x[val_idx]),
        y_validation=labels[val_idx],
        x_test=np.ascontiguousarray(x[test_idx]),
        y_test=labels[test_idx],
        num_classes=10,
        input_name="pixel_values",
        metric="accuracy",
        preprocessing=PREPROCESSING,
        split=split,
    )


@register_task
class DigitsTask(Task):
    """Classify scikit-learn's bundled 8x8 digits; the base model is a built-in recipe."""

    name = "digits"
    metrics = {"accuracy": "maximize"}
    modality = "vision"
    sources = ("recipe",)

    def load(self, heldout_fraction: float = 0.25, seed: int = 0,
             test_fraction: float = DEFAULT_TEST_FRACTION) -> TaskData:
        return load_digits_task(heldout_fraction=heldout_fraction, seed=seed,
                                test_fraction=test_fraction)

    def score(self, outputs: np.ndarray, data: TaskData, state: Any) -> float:
        return classification_accuracy(outputs, data.y_scored)

