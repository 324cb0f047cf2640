"""What a task hands the rest of paretoforge: preprocessed arrays split three ways, provenance.

numpy is only imported for type checking here, so that importing :mod:`paretoforge.tasks` (which
the CLI does to list tasks) stays instant.
"""

from __future__ import annotations

import copy
import hashlib
import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paretoforge.exceptions import ParetoforgeError, SpecError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DEFAULT_TEST_FRACTION", "SPLITS", "TaskData", "check_split_params",
           "classification_accuracy", "divide_heldout"]

#: The splits of a task's data, in order.
SPLITS: tuple[str, ...] = ("train", "validation", "test")
#: Fraction of the held-out part that becomes the test split unless the spec says otherwise.
DEFAULT_TEST_FRACTION = 0.5


@dataclass(frozen=True, eq=False, init=False)  # eq=False: arrays have no truth value
class TaskData:
    """A task's data, already preprocessed into model inputs, split into train, validation
    and test.

    - **train** fits weights: the base recipe, importance scores, distillation, int8-static
      calibration, latency samples.
    - **validation** is where the search scores candidates: the study's objective values,
      constraints, pre-screening and the choice of the front and of the members ``refine``
      rebuilds.
    - **test** is scored once per front member after the search (and after ``refine``) and
      never fed back; it is the number to quote. Workers never receive it
      (:meth:`without_test`).

    The held-out part of the data (``heldout_fraction``, ``n_heldout``, ...) is divided,
    seeded and stratified where labels exist, into validation and test by ``test_fraction``
    (:func:`divide_heldout`); ``split`` records each split's size and the sha256 of its indices.

    **Older tasks.** A task written before the three-way split passes ``x_heldout`` /
    ``y_heldout`` and reads ``data.y_heldout`` in ``score``. It keeps working: its held-out
    arrays are divided here (``test_fraction`` 0.5, seeded by ``split["seed"]``, stratified
    when every class has two examples), and ``x_heldout`` / ``y_heldout`` read as the split
    being scored (:attr:`scored`). Such a loader cannot take another ``test_fraction``.

    Attributes:
        name: Registered task name, e.g. ``"digits"``.
        x_train: Model inputs used for training: one array (e.g. float32 ``(N, 1, 8, 8)``
            pixel values), or, for models with several inputs, input name -> array (e.g.
            int64 ``input_ids`` and ``attention_mask``, each ``(N, T)``).
        y_train: int64 labels of ``x_train`` (``-1`` where the task has no labels).
        x_validation, y_validation: The search's data (same form as ``x_train``).
        x_test, y_test: The test split; ``None`` where it is withheld (:meth:`without_test`).
        num_classes: Number of classes of the labels.
        input_name: Name of the model's (first) input argument and ONNX input, e.g.
            ``"pixel_values"`` or ``"input_ids"``.
        metric: Name of the quality metric, e.g. ``"accuracy"``.
        preprocessing: Exact human-readable account of the preprocessing, for the manifest.
        split: JSON-able account of the split: method, seed, fractions, sizes
            (``n_train``, ``n_heldout``, ``n_validation``, ``n_test``) and the sha256 of the
            sorted indices of each held-out split.
        scored: The split :meth:`Task.score` is asked about (``"validation"`` or ``"test"``);
            see :meth:`scoring`.

    Example:
        >>> from paretoforge.tasks import load_task
        >>> task = load_task("digits", heldout_fraction=0.25, test_fraction=0.5, seed=0)
        >>> task.x_train.shape[1:], task.num_classes, task.metric
        ((1, 8, 8), 10, 'accuracy')
        >>> task.split["n_validation"] + task.split["n_test"] == task.split["n_heldout"]
        True
        >>> task.scoring("test").y_scored is task.y_test
        True
    """

    name: str
    x_train: np.ndarray | dict[str, np.ndarray]
    y_train: np.ndarray
    x_validation: np.ndarray | dict[str, np.ndarray]
    y_validation: np.ndarray
    x_test: np.ndarray | dict[str, np.ndarray] | None
    y_test: np.ndarray | None
    num_classes: int
    input_name: str
    metric: str
    preprocessing: str
    split: dict[str, Any]
    scored: str

    def __init__(self, *, name: str, x_train: Any, y_train: Any, num_classes: int,
                 input_name: str, metric: str, preprocessing: str, split: dict[str, Any],
                 x_validation: Any = None, y_validation: Any = None, x_test: Any = None,
                 y_test: Any = None, x_heldout: Any = None, y_heldout: Any = None,
                 scored: str = "validation") -> None:
        if x_heldout is not None or y_heldout is not None:
            if x_validation is not None or x_test is not None:
                raise SpecError(f"task {name!r}: TaskData takes x_heldout/y_heldout (older "
                                "tasks) or x_validation/x_test, not both")
            if x_heldout is None or y_heldout is None:
                raise SpecError(f"task {name!r}: TaskData needs both x_heldout and y_heldout")
            x_validation, y_validation, x_test, y_test, split = _divide_old(
                name, x_heldout, y_heldout, split)
        if x_validation is None or y_validation is None:
            raise SpecError(f"task {name!r}: TaskData needs x_validation and y_validation "
                            "(and x_test / y_test), or an older task's x_heldout / y_heldout")
        if (x_test is None) != (y_test is None):
            raise SpecError(f"task {name!r}: TaskData needs both x_test and y_test")
        if scored not in ("validation", "test"):
            raise SpecError(f"TaskData.scored must be 'validation' or 'test', not {scored!r}")
        values = {"name": name, "x_train": x_train, "y_train": y_train,
                  "x_validation": x_validation, "y_validation": y_validation,
                  "x_test": x_test, "y_test": y_test, "num_classes": num_classes,
                  "input_name": input_name, "metric": metric, "preprocessing": preprocessing,
                  "split": split, "scored": scored}
        for k, v in values.items():
            object.__setattr__(self, k, v)

    def _with(self, **changes: Any) -> TaskData:
        new = copy.copy(self)
        for k, v in changes.items():
            object.__setattr__(new, k, v)
        return new

    @property
    def input_names(self) -> tuple[str, ...]:
        """Names of the model's inputs, in order."""
        if isinstance(self.x_train, dict):
            return tuple(self.x_train)
        return (self.input_name,)

    @property
    def has_test(self) -> bool:
        """Whether the test split is here (it is withheld from the search's workers)."""
        return self.x_test is not None

    def feeds(self, split: str) -> dict[str, np.ndarray]:
        """Inputs of ``split`` (``"train"``, ``"validation"`` or ``"test"``) as
        ``{input name: array}``; ``"heldout"`` (older code) is the :attr:`scored` split.

        Raises:
            SpecError: an unknown split.
            ParetoforgeError: ``"test"`` where the test split is withheld.
        """
        if split == "heldout":
            split = self.scored
        if split not in SPLITS:
            raise SpecError(f"Unknown split {split!r}. Available: {', '.join(SPLITS)}.")
        x = {"train": self.x_train, "validation": self.x_validation, "test": self.x_test}[split]
        if x is None:
            raise ParetoforgeError(
                f"task {self.name!r}: the test split is withheld here; no search decision may "
                "see it. It is scored once per front member after the search "
                "(paretoforge.pipeline.score_test)")
        return dict(x) if isinstance(x, dict) else {self.input_name: x}

    def labels(self, split: str) -> np.ndarray:
        """Labels of ``split`` (``"heldout"``: the :attr:`scored` split)."""
        split = self.scored if split == "heldout" else split
        self.feeds(split)  # the same checks
        return {"train": self.y_train, "validation": self.y_validation,
                "test": self.y_test}[split]

    @property
    def x_scored(self) -> np.ndarray | dict[str, np.ndarray]:
        """Inputs of the split being scored (:attr:`scored`)."""
        x = self.feeds(self.scored)
        return x if isinstance(self.x_train, dict) else x[self.input_name]

    @property
    def y_scored(self) -> np.ndarray:
        """Labels of the split being scored (:attr:`scored`): what :meth:`Task.score` reads."""
        return self.labels(self.scored)

    # Older tasks read these in score(): they are the split being scored.
    x_heldout = x_scored
    y_heldout = y_scored

    def scoring(self, split: str) -> TaskData:
        """This data with :attr:`scored` set to ``split`` (``"validation"`` or ``"test"``):
        what :meth:`Task.score` and :meth:`Task.prepare_state` are given for that split."""
        if split not in ("validation", "test"):
            raise SpecError(f"Only validation or test is scored, not {split!r}.")
        if split == "test":
            self.feeds("test")  # raises where it is withheld
        return self._with(scored=split)

    def without_test(self) -> TaskData:
        """This data without its test split: what travels to the search's workers."""
        return self._with(x_test=None, y_test=None, scored="validation")

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


def _sha(idx: Any) -> str:
    import numpy as np

    return hashlib.sha256(np.asarray(idx, dtype="<i8").tobytes()).hexdigest()


def divide_heldout(heldout_idx: Any, labels: Any, test_fraction: float, seed: int, *,
                   task: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Divide held-out indices into validation and test, seeded, stratified where possible.

    Args:
        heldout_idx: The held-out part's indices (into the task's own numbering).
        labels: Their labels (``None``, or all ``-1``: no labels, a seeded shuffle).
        test_fraction: Fraction of the held-out part that becomes test, in (0, 1).
        seed: Seed of the division.
        task: Task name, for messages.

    Returns:
        ``(validation_idx, test_idx, record)``: sorted indices and the split fields
        ``test_fraction``, ``n_validation``, ``n_test``, ``validation_indices_sha256``,
        ``test_indices_sha256`` (sorted indices as little-endian int64 bytes) and
        ``validation_test_method``.

    Raises:
        SpecError: the held-out part is too small to give both splits an example.

    Example:
        >>> import numpy as np
        >>> v, t, rec = divide_heldout(np.arange(10), np.array([0, 1] * 5), 0.5, 0, task="x")
        >>> len(v), len(t), sorted(np.r_[v, t].tolist()) == list(range(10))
        (5, 5, True)
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    idx = np.asarray(heldout_idx, dtype=np.int64)
    y = None if labels is None else np.asarray(labels)
    if y is not None and (len(y) != len(idx) or (y < 0).all()):
        y = None
    stratify = None
    if y is not None:
        counts = np.unique(y, return_counts=True)[1]
        if counts.min() >= 2:
            stratify = y
    if len(idx) < 2:
        raise SpecError(f"{task}: the held-out part has {len(idx)} example(s); it needs at "
                        "least 2 to give validation and test one each. Hold out more "
                        "(heldout_fraction / n_heldout) or add data.")
    try:
        val, test = train_test_split(idx, test_size=float(test_fraction),
                                     random_state=int(seed), stratify=stratify)
    except ValueError:
        try:  # too few examples per class to stratify at this fraction
            val, test = train_test_split(idx, test_size=float(test_fraction),
                                         random_state=int(seed))
            stratify = None
        except ValueError as e:
            raise SpecError(f"{task}: cannot divide {len(idx)} held-out examples with "
                            f"test_fraction={test_fraction} ({e}); hold out more or change "
                            "test_fraction.") from None
    val, test = np.sort(val), np.sort(test)
    record = {
        "test_fraction": float(test_fraction),
        "n_validation": int(len(val)),
        "n_test": int(len(test)),
        "validation_indices_sha256": _sha(val),
        "test_indices_sha256": _sha(test),
        "validation_test_method": "sklearn.model_selection.train_test_split of the held-out "
        "indices" + (" (stratify=labels)" if stratify is not None else "")
        + ", random_state=seed, test_size=test_fraction",
    }
    return val, test, record


def _take(x: Any, idx: Any) -> Any:
    import numpy as np

    if isinstance(x, dict):
        return {k: np.ascontiguousarray(v[idx]) for k, v in x.items()}
    return np.ascontiguousarray(x[idx])


def _divide_old(name: str, x_heldout: Any, y_heldout: Any,
                split: dict[str, Any]) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
    """An older task's held-out arrays, divided into validation and test (in half)."""
    import numpy as np

    y = np.asarray(y_heldout)
    seed = split.get("seed", 0) if isinstance(split, dict) else 0
    val, test, record = divide_heldout(np.arange(len(y)), y, DEFAULT_TEST_FRACTION,
                                       int(seed) if isinstance(seed, int) else 0, task=name)
    record["validation_test_method"] += (
        "; divided by TaskData from the task's x_heldout / y_heldout (an older task), "
        "indices are positions in its held-out arrays")
    split = {**dict(split), "n_heldout": int(len(y)), **record}
    return _take(x_heldout, val), y[val], _take(x_heldout, test), y[test], split


def check_split_params(task: str, heldout_fraction: Any, seed: Any,
                       test_fraction: Any = DEFAULT_TEST_FRACTION) -> None:
    """Raise SpecError unless ``0 < heldout_fraction < 1``, ``0 < test_fraction < 1`` and
    ``seed`` is an integer >= 0."""
    for field_name, value, hint in (("heldout_fraction", heldout_fraction, "0.25"),
                                    ("test_fraction", test_fraction, "0.5")):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not 0.0 < value < 1.0
        ):
            raise SpecError(
                f"{task}: {field_name} must be a number strictly between 0 and 1, got "
                f"{value!r}. Use e.g. {hint}."
            )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise SpecError(f"{task}: seed must be an integer >= 0, got {seed!r}.")


def classification_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows of ``logits`` ``(N, C)`` whose arg-max is the label ``(N,)``."""
    return float((logits.argmax(-1) == labels).mean())
