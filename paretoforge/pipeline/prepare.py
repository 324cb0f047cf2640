"""What every candidate shares, computed once on the driver: task data, base model, importance.

The base model is a built-in recipe (trained once, cached) or a local Hugging Face checkpoint
(``model.path``: loaded offline, its tokenizer drives the text task). The bundle travels to the
workers through the Ray object store: weights as safetensors bytes (never pickled modules),
data as numpy arrays (one per model input), importance as plain lists.

The test split stays on the driver: :meth:`Prepared.for_workers` is the bundle without it (and
without the task's state for it), which is what the search's workers get. The driver scores
it once per front member after the search (:func:`paretoforge.pipeline.score_test`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from paretoforge._system import idle_cores
from paretoforge.spec import Spec
from paretoforge.tasks import TASKS, Task, TaskData

__all__ = ["Prepared", "cache_dir", "checkpoint_shape", "load_spec_task", "preload_task",
           "prepare", "prepare_cached"]

_LAST: dict[str, Prepared] = {}  # the last bundle this process prepared, by its inputs
# A task being loaded in the background (preload_task), by its inputs: taken once.
_PRELOADED: dict[str, Future[Any]] = {}
_PRELOAD_LOCK = threading.Lock()


def cache_dir() -> Path:
    """Where base models and supernets are cached (:func:`paretoforge._io.cache_root`)."""
    from paretoforge._io import cache_root

    return cache_root()


@dataclass
class Prepared:
    """The shared inputs of every candidate build, computed once on the driver."""

    task: TaskData  # the data, already preprocessed: train, validation and (driver) test
    base_config_json: str
    base_weights: bytes  # safetensors serialisation of the base state dict
    base_info: dict[str, Any]
    importance: dict[str, Any]
    num_layers: int
    num_heads: int
    timings: dict[str, float] = field(default_factory=dict)
    checkpoint_dir: str | None = None  # tokenizer / pooling files copied into every artifact
    # What the task computed once from the unpruned base (Task.prepare_state), e.g. the
    # embedding-fidelity task's pooling and reference embeddings.
    task_state: dict[str, Any] = field(default_factory=dict)
    base_key: str = ""  # content key of the base weights + config (stage cache keys)
    # The task itself travels with the bundle, so that a task registered in the user's own
    # module (not imported on the workers) still builds there.
    contract: Task | None = None
    # One-shot search: the trained supernet candidates are cut from --
    # {"key", "weights" (safetensors bytes, the base's config), "importance" (rewired), ...}.
    supernet: dict[str, Any] | None = None
    # Custom search dimensions (search_spaces.Dimension) of the user's own modules: shipped
    # by value like the task, each registers itself where the bundle is unpickled.
    dimensions: tuple[Any, ...] = ()
    # Task.prepare_state for the test split: driver only, for the test score after the search.
    test_state: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.contract is None:
            self.contract = TASKS.get(self.task.name)
        if not self.base_key:
            h = hashlib.sha256(self.base_config_json.encode())
            h.update(self.base_weights)
            self.base_key = h.hexdigest()[:16]

    @property
    def task_impl(self) -> Task:
        """The :class:`~paretoforge.tasks.Task` of :attr:`task`."""
        return self.contract or TASKS.get(self.task.name)

    def feeds(self, split: str) -> dict[str, np.ndarray]:
        """``{input name: array}`` of ``split`` (``"train"``, ``"validation"`` or ``"test"``,
        the last on the driver only)."""
        return self.task.feeds(split)

    def load_supernet(self) -> Any:
        """Rebuild the supernet (the base's architecture, its trained weights rewired by
        importance) from :attr:`supernet`'s safetensors bytes."""
        from paretoforge.models.io import load_pretrained

        if self.supernet is None:
            raise ValueError("this bundle has no supernet (search.strategy per-candidate)")
        with tempfile.TemporaryDirectory(prefix="pf-supernet-") as d:
            Path(d, "config.json").write_text(self.base_config_json)
            Path(d, "model.safetensors").write_bytes(self.supernet["weights"])
            return load_pretrained(d)

    def for_workers(self) -> Prepared:
        """This bundle without the test split and its state: what the search's workers get,
        so that no search decision can see a test example.

        Example:
            >>> prepared.for_workers().task.has_test  # doctest: +SKIP
            False
        """
        return replace(self, task=self.task.without_test(), test_state=None)

    def load_base(self) -> Any:
        """Rebuild the base model from safetensors bytes + config (no pickle involved)."""
        from paretoforge.models.io import load_pretrained

        with tempfile.TemporaryDirectory(prefix="pf-base-") as d:
            Path(d, "config.json").write_text(self.base_config_json)
            Path(d, "model.safetensors").write_bytes(self.base_weights)
            return load_pretrained(d)


def _task_key(spec: Spec) -> str:
    return json.dumps([spec.task.model_dump(mode="json"), spec.model.path], sort_keys=True)


def preload_task(spec: Spec) -> None:
    """Start loading the spec's task in a background thread (while a cluster starts, say);
    the next :func:`load_spec_task` of the same task in this process takes the result, once.

    Nothing happens where this process already holds the prepared bundle of ``spec``
    (:func:`prepare_cached` will not load the task). A load that fails here is done again by
    :func:`load_spec_task`, which reports its error as it would have.
    """
    if _bundle_key(spec) in _LAST:
        return
    future: Future[Any] = Future()
    with _PRELOAD_LOCK:
        _PRELOADED.clear()
        _PRELOADED[_task_key(spec)] = future

    def load() -> None:
        try:
            future.set_result(_load_spec_task(spec))
        except BaseException as e:  # noqa: BLE001  (handed to the caller, which loads again)
            future.set_exception(e)

    threading.Thread(target=load, name="pf-task-preload", daemon=True).start()


def load_spec_task(spec: Spec) -> Any:
    """The spec's task data (a :class:`~paretoforge.tasks.TaskData`), split as the spec says.

    The loader gets ``task.params``, the seed and the ``task.split`` fields the task takes
    (:attr:`~paretoforge.tasks.Task.split_params`), ``task.data`` as ``path``, and with a
    checkpoint (``model.path``) its directory, whose tokenizer or image processor
    preprocesses the data.
    """
    with _PRELOAD_LOCK:
        future = _PRELOADED.pop(_task_key(spec), None)
    if future is not None:
        with contextlib.suppress(Exception):
            return future.result()
    return _load_spec_task(spec)


def _load_spec_task(spec: Spec) -> Any:
    from paretoforge.spec import resolve_model_path
    from paretoforge.tasks import load_task

    params = dict(spec.task.params)
    params.setdefault("seed", spec.task.split.seed)
    for name in TASKS.get(spec.task.name).split_params:
        params.setdefault(name, getattr(spec.task.split, name))
    if spec.task.data:
        params["path"] = spec.task.data
    if spec.model.path is not None:
        params["checkpoint"] = str(resolve_model_path(spec.model.path))
    return load_task(spec.task.name, **params)


def prepare(spec: Spec, *, log: Any = print) -> Prepared:
    """Load the task, train (or load from cache) the base model, and score importance."""
    import torch
    from safetensors.torch import save as st_save

    from paretoforge.models.recipes import get_recipe
    from paretoforge.models.vit import get_base_model

    if spec.model.path is not None:
        return _prepare_checkpoint(spec, log=log)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    task = load_spec_task(spec)
    recipe = get_recipe(spec.model.recipe, **spec.model.overrides)
    timings["task_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # Train with no more threads than idle cores: torch's intra-op threads spin at their
    # barriers, and on busy cores that turned a 23 s training into 470 s here.
    threads = idle_cores()
    torch.set_num_threads(threads)
    model, info = get_base_model(recipe, task, cache_dir() / "base")
    timings["base_s"] = time.perf_counter() - t0
    if not info.get("cached"):
        timings["base_threads"] = threads  # only for a base trained here
    log(f"base model: validation {task.metric} {info['heldout_accuracy']:.4f} "
        f"({'cached' if info.get('cached') else f'trained on {threads} thread(s)'} in "
        f"{timings['base_s']:.1f}s)")

    t0 = time.perf_counter()
    torch.manual_seed(spec.search.seed)
    state, test_state, imp = _state_and_importance(model, task, spec.search.seed)
    timings["importance_s"] = time.perf_counter() - t0

    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return Prepared(
        task=task, base_config_json=model.config.to_json_string(),
        base_weights=st_save(weights),
        base_info={k: v for k, v in info.items() if _jsonable(v)},
        importance=imp.to_dict(), num_layers=int(model.config.num_hidden_layers),
        num_heads=int(model.config.num_attention_heads), timings=timings, task_state=state,
        test_state=test_state,
    )


def checkpoint_shape(path: str) -> tuple[int, int]:
    """``(layers, heads)`` of the checkpoint at ``path`` (``pkg:`` paths too), from config.json;
    a grouped-query checkpoint's heads are its key/value groups (what pruning keeps or drops).

    Raises:
        SpecError: the config has no layer or head count.
    """
    from paretoforge.exceptions import SpecError
    from paretoforge.spec import resolve_model_path

    config_path = resolve_model_path(path) / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    layers = next((config[k] for k in ("num_hidden_layers", "n_layers", "n_layer")
                   if k in config), None)  # fmt: skip
    # Grouped-query attention prunes whole key/value groups: those are its head units.
    heads = next((config[k] for k in ("num_key_value_heads", "num_attention_heads", "n_heads",
                                      "n_head") if config.get(k) is not None), None)  # fmt: skip
    if not isinstance(layers, int) or not isinstance(heads, int):
        raise SpecError(f"model.path: {str(config_path)!r} gives no layer / head count")
    return layers, heads


def _prepare_checkpoint(spec: Spec, *, log: Any) -> Prepared:
    """:func:`prepare` for ``model.path``: the checkpoint, its tokenizer, its own task."""
    import torch

    from paretoforge.models.io import load_pretrained, save_pretrained
    from paretoforge.spec import resolve_model_path

    timings: dict[str, float] = {}
    ckpt = resolve_model_path(spec.model.path or "")
    t0 = time.perf_counter()
    task = load_spec_task(spec)
    timings["task_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    torch.set_num_threads(idle_cores())
    overrides = dict(spec.model.overrides)
    saved_arch = (json.loads((ckpt / "config.json").read_text()).get("architectures") or [""])[0]
    arch = spec.model.architecture
    if (task.num_classes > 0 and arch is not None and arch != saved_arch
            and "num_labels" not in overrides):
        overrides["num_labels"] = task.num_classes  # a new classification head
    model = load_pretrained(ckpt, architecture=arch, **overrides)
    timings["base_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    torch.manual_seed(spec.search.seed)
    state, test_state, imp = _state_and_importance(model, task, spec.search.seed)
    quality = TASKS.get(task.name).describe_base(model, task)
    timings["importance_s"] = time.perf_counter() - t0
    log(f"base model: {spec.model.path} ({type(model).__name__}, "
        f"{int(model.config.num_hidden_layers)} layers); {quality}; importance in "
        f"{timings['importance_s']:.1f}s")

    with tempfile.TemporaryDirectory(prefix="pf-ckpt-") as d:
        save_pretrained(model, d)
        config_json = Path(d, "config.json").read_text()
        weights = Path(d, "model.safetensors").read_bytes()
    layers, heads = checkpoint_shape(str(ckpt))
    return Prepared(
        task=task, base_config_json=config_json, base_weights=weights,
        base_info={"path": spec.model.path, "directory": str(ckpt),
                   "architecture": type(model).__name__, "model_type": model.config.model_type},
        importance=imp.to_dict(), num_layers=layers, num_heads=heads, timings=timings,
        checkpoint_dir=str(ckpt), task_state=state, test_state=test_state,
    )


def _bundle_key(spec: Spec) -> str:
    return json.dumps([spec.model.model_dump(mode="json"), spec.task.model_dump(mode="json"),
                       spec.search.seed, str(cache_dir())], sort_keys=True)


def prepare_cached(spec: Spec, *, log: Any = print) -> Prepared:
    """:func:`prepare`, reusing this process's last bundle when its inputs are the same.

    The bundle depends on the model, the task and the seed only; a notebook or a test session
    that runs several searches of the same model prepares it once.
    """
    key = _bundle_key(spec)
    if key not in _LAST:
        _LAST.clear()
        _LAST[key] = prepare(spec, log=log)
    else:
        log("base model, data and importance: reused from this process")
    return _LAST[key]


def _state_and_importance(model: Any, task: TaskData, seed: int = 0
                          ) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The task's state from the unpruned base for validation (the search's) and for test
    (the driver's), then importance on the training split with the loss the task asks for
    (its labels' loss by default), cached on disk by content key (``cache_dir()/importance``:
    all-MiniLM-L6-v2's takes minutes on 2 cores, and a resumed search wants the same)."""
    from paretoforge.models.importance import Importance, compute_importance

    impl = TASKS.get(task.name)
    state = impl.prepare_state(model, task.scoring("validation"))
    test_state = impl.prepare_state(model, task.scoring("test"))
    loss_fn = impl.importance_loss(state)
    labels = None if loss_fn is not None else task.y_train
    path = cache_dir() / "importance" / f"{_importance_key(model, task, labels, seed)}.json"
    try:
        imp = Importance.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        imp = compute_importance(model, task.feeds("train"), labels, loss_fn=loss_fn)
        from paretoforge._io import atomic_write_json

        atomic_write_json(path, imp.to_dict())
    return state, test_state, imp


def _importance_key(model: Any, task: TaskData, labels: Any, seed: int) -> str:
    """Content key of an importance computation: the base's weights, the task and its
    training split, the labels (or the task's own loss), the seed, and the importance code."""
    import hashlib

    import numpy as np

    from paretoforge.models import importance

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for name, arr in sorted(task.feeds("train").items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    if labels is not None:
        h.update(np.ascontiguousarray(labels).tobytes())
    h.update(json.dumps([task.name, task.metric, seed], sort_keys=True).encode())
    h.update(Path(importance.__file__).read_bytes())
    return h.hexdigest()[:24]


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False
