"""The ``Task`` contract: everything paretoforge needs to know about a task, in one class.

A task says what data it loads and how it splits it, which metrics it reports and in which
direction, which checkpoint families it accepts, which head a candidate exports, how that
head's outputs are scored, and which distillation loss recovers a pruned candidate. Nothing
outside :mod:`paretoforge.tasks` branches on a task's or a metric's name: the spec, the build
pipeline and the results ask the task.

Adding a task is one file: a :class:`Task` subclass, registered with :func:`register_task`
(it may live in your own code, imported before the spec is read).

Example:
    >>> import numpy as np
    >>> from paretoforge.tasks import TASKS, Task, TaskData, register_task
    >>> @register_task
    ... class Parity(Task):
    ...     '''Even or odd digit, from the bundled digits.'''
    ...     name = "doc-parity"
    ...     metrics = {"accuracy": "maximize"}
    ...     sources = ("recipe",)
    ...     def load(self, heldout_fraction: float = 0.25, test_fraction: float = 0.5,
    ...              seed: int = 0) -> TaskData:
    ...         d = TASKS.get("digits").load(heldout_fraction=heldout_fraction,
    ...                                      test_fraction=test_fraction, seed=seed)
    ...         return TaskData(name=self.name, x_train=d.x_train, y_train=d.y_train % 2,
    ...                         x_validation=d.x_validation, y_validation=d.y_validation % 2,
    ...                         x_test=d.x_test, y_test=d.y_test % 2,
    ...                         num_classes=2, input_name=d.input_name, metric="accuracy",
    ...                         preprocessing=d.preprocessing + "; label % 2", split=d.split)
    ...     def score(self, outputs: np.ndarray, data: TaskData, state: dict) -> float:
    ...         return float((outputs.argmax(-1) == data.y_scored).mean())
    >>> TASKS.get("doc-parity").quality_metric
    'accuracy'
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from paretoforge.exceptions import SpecError
from paretoforge.registry import Registry
from paretoforge.tasks._base import DEFAULT_TEST_FRACTION

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from paretoforge.tasks._base import TaskData

__all__ = ["TASKS", "ExportHead", "Task", "ensure_registered", "load_task", "register_task",
           "task_metrics"]

Direction = Literal["maximize", "minimize"]


@dataclass
class ExportHead:
    """What a candidate exports: the module to trace, its output's name and per-example shape.

    Attributes:
        module: The ``nn.Module`` traced to ONNX (the model itself, or a wrapper around it).
        output_name: The ONNX output's name, e.g. ``"logits"``, ``"sentence_embedding"``.
        output_shape: The output's shape after the batch dimension, e.g. ``[10]``.
        extra: JSON-able facts about the output recorded in the manifest (e.g. its pooling).
        decode_past: Set for a decoder that generates: ``module`` is the causal LM itself,
            exported as one KV-cache graph for prefill and decode
            (:func:`~paretoforge.kernels.decoder_export.export_decoder_onnx`), and every
            ONNX Runtime profile also times one decode step after this many cached tokens
            (``decode_ms_per_token@PROFILE``). None: one graph of ``module``'s forward.
    """

    module: Any
    output_name: str
    output_shape: list[int | str]
    extra: dict[str, Any] = field(default_factory=dict)
    decode_past: int | None = None


class Task(ABC):
    """A task paretoforge can search for. Subclass it, fill the class attributes, implement
    :meth:`load`, and :func:`register_task` it.

    Each method states who calls it and when. The data a task returns has three splits: train
    (importance scores, distillation, calibration: everything that fits weights), validation
    (every search decision: the study's values, constraints, pre-screening, the front and
    what ``refine`` rebuilds) and test, which no search decision sees: it is withheld from
    the workers and scored once per front member after the search (and after ``refine``),
    by :meth:`score` on ``data.scoring("test")``. Test quality is the number to quote.

    Class attributes:
        name: The registered name (``task.name`` in the spec).
        metrics: Metric name -> direction; the first is the quality metric candidates are
            scored by (``task.metric`` in the spec defaults to it).
        sources: Where the base model may come from: ``"recipe"`` (a built-in recipe trained
            on this task's data) and/or ``"checkpoint"`` (``model.path``).
        modality: What its inputs are, e.g. ``"vision"`` or ``"text"`` (for messages).
        families: ``model_type`` values of the checkpoints it accepts (empty: no checkpoint).
        data: ``None`` when the task brings its own data (``task.data`` is refused); else a
            description of the data it reads from ``task.data``.
        data_required: Whether ``task.data`` must be given (else the task has a default).
        data_may_be_dir: Whether ``task.data`` may be a folder (else a file).
        split_params: The ``task.split`` fields the loader takes (``heldout_fraction``,
            ``test_fraction``). A loader without ``test_fraction`` (an older task) has its
            held-out part divided in half by :class:`TaskData`.
        distill_losses: The distillation losses it supports beyond hidden states:
            ``"logits"`` (soft labels, temperature) and/or ``"pooled"`` (pooled embedding).
        decoder: Whether its exports are KV-cache decoder graphs (:meth:`export_head` sets
            ``decode_past``), so that the spec accepts ``decode_ms_per_token@PROFILE``.
    """

    name: ClassVar[str]
    metrics: ClassVar[Mapping[str, Direction]]
    sources: ClassVar[tuple[str, ...]] = ("checkpoint",)
    modality: ClassVar[str] = "text"
    families: ClassVar[tuple[str, ...]] = ()
    data: ClassVar[str | None] = None
    data_required: ClassVar[bool] = False
    data_may_be_dir: ClassVar[bool] = False
    split_params: ClassVar[tuple[str, ...]] = ("heldout_fraction", "test_fraction")
    distill_losses: ClassVar[tuple[str, ...]] = ("logits",)
    decoder: ClassVar[bool] = False

    # -- what it is -------------------------------------------------------------------------

    @property
    def quality_metric(self) -> str:
        """The metric candidates are scored by (the first of :attr:`metrics`)."""
        return next(iter(self.metrics))

    def direction(self, metric: str) -> Direction:
        """``"maximize"`` or ``"minimize"`` for one of this task's metrics."""
        return self.metrics[metric]

    def accepts_family(self, model_type: str) -> bool:
        """Whether a checkpoint of this ``model_type`` runs the task (checked with the spec)."""
        return model_type in self.families

    # -- data: called once, by prepare on the driver ----------------------------------------

    @abstractmethod
    def load(self, **params: Any) -> TaskData:
        """Load and split the data into model inputs: train, validation and test
        (``x_validation`` / ``x_test`` of :class:`TaskData`; an older task's ``x_heldout`` is
        divided in half). Called once per search, on the driver, before the base model is
        loaded; ``params`` are the spec's ``task.params`` plus ``checkpoint`` (the checkpoint
        directory, for tasks that preprocess with it), ``path`` (``task.data``), ``seed`` and
        the :attr:`split_params`. Raises SpecError on bad data.
        """

    def load_params(self) -> list[str]:
        """The keyword parameters :meth:`load` accepts."""
        return [p.name for p in inspect.signature(self.load).parameters.values()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def prepare_state(self, base: nn.Module, data: TaskData) -> dict[str, Any]:
        """What every candidate's scoring and recovery need from the unpruned base, computed
        by prepare (after :meth:`load`, before importance) on the training split and the
        inputs of the scored split ``data.scored``. Called twice: with ``"validation"`` (that
        state travels to the workers and is what :meth:`importance_loss` and
        :meth:`distill_options` get) and with ``"test"`` (kept on the driver for the test
        score only). JSON-able values and numpy arrays only. Default: nothing.
        """
        return {}

    def importance_loss(self, state: Mapping[str, Any]) -> Callable[..., Any] | None:
        """The loss importance scores are the gradients of (``loss(output, inputs, labels)``),
        or None for the model's own label loss. Called once by prepare."""
        return None

    def describe_base(self, base: nn.Module, data: TaskData) -> str:
        """How the base model's quality is reported when it is loaded (one short phrase)."""
        return "loaded as is"

    # -- a candidate: called by the build pipeline on a worker ------------------------------

    def export_head(self, model: nn.Module, state: Mapping[str, Any],
                    data: TaskData) -> ExportHead:
        """The module to export and its output, for a (pruned, recovered) ``model``. Called
        by the pipeline's export stage. Default: the model's own ``logits``."""
        return ExportHead(module=model, output_name="logits",
                          output_shape=[int(data.num_classes)])

    @abstractmethod
    def score(self, outputs: np.ndarray, data: TaskData, state: Mapping[str, Any]) -> float:
        """The quality metric of a candidate from its exported head's ``outputs`` on the
        inputs of the scored split ``data.scored`` (one row per example of
        ``data.x_scored``, in order; its labels are ``data.y_scored``), with the ``state``
        :meth:`prepare_state` gave for that split. Called on ONNX Runtime outputs by the
        pipeline's score stage, once per candidate, for ``"validation"`` (the search's value),
        and once per front member after the search for ``"test"``."""

    def distill_options(self, data: TaskData, state: Mapping[str, Any],
                        recovery: Any) -> dict[str, Any]:
        """Keyword arguments for :func:`paretoforge.models.distill.distill` beyond the common
        ones (epochs, lr, temperature, alpha, batch size, ``hidden_weight``): ``labels`` (the
        training labels, or None for pure distillation) and any task-specific loss. Called by
        the pipeline's recover stage."""
        return {"labels": data.y_train}

    def __repr__(self) -> str:
        return f"<task {self.name!r}>"


TASKS: Registry[Task] = Registry("task")


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register one instance of a :class:`Task` subclass under its ``name``.

    Raises:
        ValueError: a task of that name is already registered, or the class is incomplete.
    """
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise ValueError(f"{cls.__name__}: a task needs a non-empty class attribute `name`")
    metrics = getattr(cls, "metrics", None)
    if not isinstance(metrics, Mapping) or not metrics or any(
            d not in ("maximize", "minimize") for d in metrics.values()):
        raise ValueError(f"task {cls.name!r}: `metrics` must map metric names to 'maximize' "
                         "or 'minimize', the quality metric first")
    if not set(cls.sources) <= {"recipe", "checkpoint"} or not cls.sources:
        raise ValueError(f"task {cls.name!r}: `sources` must be 'recipe' and/or 'checkpoint'")
    TASKS.add(cls.name, cls())
    return cls


def ensure_registered(task: Task) -> None:
    """Register ``task`` (an instance that travelled from another process, e.g. a user's task
    shipped to a Ray worker with the prepared bundle) unless a task of its name is.

    Raises:
        ValueError: another task of the same name, of a different class, is registered.
    """
    if task.name not in TASKS:
        TASKS.add(task.name, task)
    elif type(TASKS.get(task.name)).__qualname__ != type(task).__qualname__:
        raise ValueError(f"task {task.name!r} is registered here as "
                         f"{type(TASKS.get(task.name)).__qualname__}, not "
                         f"{type(task).__qualname__}")


def task_metrics() -> dict[str, Direction]:
    """Every registered task's metrics with their directions (a metric means one thing)."""
    out: dict[str, Direction] = {}
    for name in TASKS:
        out.update(TASKS.get(name).metrics)
    return out


def load_task(name: str, **params: Any) -> TaskData:
    """Load a registered task by name, with the task's own parameters.

    Args:
        name: Registered task name (see ``TASKS.names()``).
        **params: Keyword parameters of that task's :meth:`Task.load`.

    Raises:
        UnknownComponentError: ``name`` is not a registered task.
        SpecError: A parameter is unknown to the task, or has a bad value.

    Example:
        >>> load_task("digits", seed=1).split["seed"]
        1
        >>> load_task("digits", test_fraction=0.4).split["test_fraction"]
        0.4
    """
    task = TASKS.get(name)
    accepted = task.load_params()
    if "test_fraction" in params and "test_fraction" not in accepted:
        # an older task, whose loader returns x_heldout / y_heldout: TaskData halves it
        fraction = params.pop("test_fraction")
        if fraction != DEFAULT_TEST_FRACTION:
            raise SpecError(
                f"task {name!r}: its load() takes no test_fraction, so its held-out part is "
                f"divided in half (test_fraction {DEFAULT_TEST_FRACTION}), not {fraction!r}. "
                "Remove task.split.test_fraction, or give load() a test_fraction parameter "
                "and return x_validation / x_test."
            )
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise SpecError(
            f"Unknown parameter(s) {', '.join(map(repr, unknown))} for task {name!r}. "
            f"Valid parameters: {', '.join(accepted) or '(none)'}."
        )
    data = task.load(**params)
    if not data.has_test:
        raise SpecError(f"task {name!r}: load() returned no test split; pass x_test / y_test "
                        "to TaskData (or an older task's x_heldout / y_heldout).")
    return data
