"""What every candidate shares, computed once on the driver: task data, base model, importance.

The base model is a built-in recipe (trained once, cached) or a local Hugging Face checkpoint
(``model.path``: loaded offline, its tokenizer drives the text task). The bundle travels to the
workers through the Ray object store: weights as safetensors bytes (never pickled modules),
data as numpy arrays (one per model input), importance as plain lists.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from paretoforge.spec import Spec
from paretoforge.tasks._base import TaskData

__all__ = ["Prepared", "cache_dir", "checkpoint_shape", "load_spec_task", "prepare",
           "prepare_cached"]

_LAST: dict[str, Prepared] = {}  # the last bundle this process prepared, by its inputs


def cache_dir() -> Path:
    """Where trained base models are cached: $PARETOFORGE_CACHE, else ~/.cache/paretoforge."""
    env = os.environ.get("PARETOFORGE_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "paretoforge"


@dataclass
class Prepared:
    """The shared inputs of every candidate build."""

    task: TaskData  # the data, already preprocessed, with its held-out split
    base_config_json: str
    base_weights: bytes  # safetensors serialisation of the base state dict
    base_info: dict[str, Any]
    importance: dict[str, Any]
    num_layers: int
    num_heads: int
    timings: dict[str, float] = field(default_factory=dict)
    checkpoint_dir: str | None = None  # tokenizer / pooling files copied into every artifact
    pooling: dict[str, Any] | None = None  # embedding-fidelity: Pooling.to_dict()
    reference: np.ndarray | None = None  # embedding-fidelity: unpruned held-out embeddings

    def feeds(self, split: str) -> dict[str, np.ndarray]:
        """``{input name: array}`` of ``split`` (``"train"`` or ``"heldout"``)."""
        return self.task.feeds(split)

    def load_base(self) -> Any:
        """Rebuild the base model from safetensors bytes + config (no pickle involved)."""
        from paretoforge.models.io import load_pretrained

        with tempfile.TemporaryDirectory(prefix="pf-base-") as d:
            Path(d, "config.json").write_text(self.base_config_json)
            Path(d, "model.safetensors").write_bytes(self.base_weights)
            return load_pretrained(d)

    def score_onnx(self, path: str | os.PathLike[str], *, batch_size: int = 1) -> float:
        """The task's quality of the ONNX model at ``path`` on the held-out split.

        Accuracy for classification; for embedding fidelity, the mean cosine of its pooled
        output to the unpruned model's :attr:`reference` embeddings. Scored ``batch_size``
        examples per call (default 1, as profiles serve: dynamic int8 takes its activation
        scales from the whole input tensor, so a batched score can differ from deployment).
        """
        from paretoforge.evaluators.quality import onnx_logits

        out = onnx_logits(path, self.feeds("heldout"), batch_size=batch_size)
        if self.task.metric == "embedding_cosine":
            from paretoforge.tasks.embedding import mean_cosine

            return mean_cosine(out, self.reference)
        return float((out.argmax(-1) == self.task.y_heldout).mean())

    def recover(self, student: Any, base: Any, recovery: Any, *, seed: int) -> Any:
        """Distil ``base`` into ``student`` (pruned from it) on the training split, as
        ``recovery`` (a :class:`~paretoforge.spec.RecoverySpec`) says; return the student.

        Raises:
            BuildError: ``recovery.pooled_weight`` is set for a task that has no pooling.
        """
        from paretoforge.exceptions import BuildError
        from paretoforge.models.distill import distill

        if recovery.epochs <= 0:
            return student
        extra: dict[str, Any] = {"hidden_weight": recovery.hidden_weight}
        if self.pooling is not None:
            from paretoforge.tasks.embedding import Pooling

            extra["pooled_weight"] = (1.0 if recovery.pooled_weight is None
                                      else recovery.pooled_weight)
            extra["pooling"] = Pooling(**self.pooling)
        elif recovery.pooled_weight:
            raise BuildError("recovery.pooled_weight applies to embedding-fidelity only")
        labels = None if self.task.metric == "embedding_cosine" else self.task.y_train
        return distill(student, base, self.task.x_train, labels, epochs=recovery.epochs,
                       lr=recovery.lr, temperature=recovery.temperature, alpha=recovery.alpha,
                       batch_size=recovery.batch_size, seed=seed, **extra)


def load_spec_task(spec: Spec) -> Any:
    """The spec's task data (a :class:`~paretoforge.tasks.TaskData`), split as the spec says.

    A built-in recipe's task takes the split from ``task.split``; with a checkpoint
    (``model.path``) the checkpoint's tokenizer or image processor preprocesses the data.
    """
    from paretoforge.spec import resolve_model_path
    from paretoforge.tasks import load_task

    if spec.model.path is None:
        return load_task(spec.task.name, heldout_fraction=spec.task.split.heldout_fraction,
                         seed=spec.task.split.seed)
    ckpt = resolve_model_path(spec.model.path)
    params = dict(spec.task.params)
    params.setdefault("seed", spec.task.split.seed)
    if spec.task.name in ("text-classification", "image-classification"):
        params.setdefault("heldout_fraction", spec.task.split.heldout_fraction)
    if spec.task.data:
        params["path"] = spec.task.data
    return load_task(spec.task.name, checkpoint=str(ckpt), **params)


def prepare(spec: Spec, *, log: Any = print) -> Prepared:
    """Load the task, train (or load from cache) the base model, and score importance."""
    import torch
    from safetensors.torch import save as st_save

    from paretoforge.models.importance import compute_importance
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
    torch.set_num_threads(_idle_cores())
    model, info = get_base_model(recipe, task, cache_dir() / "base")
    timings["base_s"] = time.perf_counter() - t0
    log(f"base model: held-out {task.metric} {info['heldout_accuracy']:.4f} "
        f"({'cached' if info.get('cached') else 'trained'} in {timings['base_s']:.1f}s)")

    t0 = time.perf_counter()
    torch.manual_seed(spec.search.seed)
    imp = compute_importance(model, task.x_train, task.y_train)
    timings["importance_s"] = time.perf_counter() - t0

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return Prepared(
        task=task, base_config_json=model.config.to_json_string(), base_weights=st_save(state),
        base_info={k: v for k, v in info.items() if _jsonable(v)},
        importance=imp.to_dict(), num_layers=int(model.config.num_hidden_layers),
        num_heads=int(model.config.num_attention_heads), timings=timings,
    )


def checkpoint_shape(path: str) -> tuple[int, int]:
    """``(layers, heads)`` of the checkpoint at ``path`` (``pkg:`` paths too), from config.json.

    Raises:
        SpecError: the config has no layer or head count.
    """
    from paretoforge.exceptions import SpecError
    from paretoforge.spec import resolve_model_path

    config_path = resolve_model_path(path) / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    layers = next((config[k] for k in ("num_hidden_layers", "n_layers", "n_layer")
                   if k in config), None)  # fmt: skip
    heads = next((config[k] for k in ("num_attention_heads", "n_heads", "n_head")
                  if k in config), None)  # fmt: skip
    if not isinstance(layers, int) or not isinstance(heads, int):
        raise SpecError(f"model.path: {str(config_path)!r} gives no layer / head count")
    return layers, heads


def _prepare_checkpoint(spec: Spec, *, log: Any) -> Prepared:
    """:func:`prepare` for ``model.path``: the checkpoint, its tokenizer, its own task."""
    import torch

    from paretoforge.models.importance import compute_importance
    from paretoforge.models.io import load_pretrained, save_pretrained
    from paretoforge.spec import resolve_model_path

    timings: dict[str, float] = {}
    ckpt = resolve_model_path(spec.model.path or "")
    t0 = time.perf_counter()
    task = load_spec_task(spec)
    timings["task_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    torch.set_num_threads(_idle_cores())
    overrides = dict(spec.model.overrides)
    saved_arch = (json.loads((ckpt / "config.json").read_text()).get("architectures") or [""])[0]
    arch = spec.model.architecture
    if (task.num_classes > 0 and arch is not None and arch != saved_arch
            and "num_labels" not in overrides):
        overrides["num_labels"] = task.num_classes  # a new classification head
    model = load_pretrained(ckpt, architecture=arch, **overrides)
    timings["base_s"] = time.perf_counter() - t0

    pooling = reference = None
    loss_fn = None
    t0 = time.perf_counter()
    torch.manual_seed(spec.search.seed)
    if task.metric == "embedding_cosine":
        from paretoforge.tasks.embedding import Pooling, contrastive_loss, sentence_embeddings

        pool = Pooling(**task.split["pooling"])
        pooling = pool.to_dict()
        loss_fn = contrastive_loss(pool)
        reference = sentence_embeddings(model, task.feeds("heldout"), pool).numpy()
        imp = compute_importance(model, task.feeds("train"), None, loss_fn=loss_fn)
        quality = "unpruned embeddings are the reference (cosine 1.0)"
    else:
        imp = compute_importance(model, task.feeds("train"), task.y_train)
        quality = "loaded as is"
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
        checkpoint_dir=str(ckpt), pooling=pooling, reference=reference,
    )


def prepare_cached(spec: Spec, *, log: Any = print) -> Prepared:
    """:func:`prepare`, reusing this process's last bundle when its inputs are the same.

    The bundle depends on the model, the task and the seed only; a notebook or a test session
    that runs several searches of the same model prepares it once.
    """
    key = json.dumps([spec.model.model_dump(mode="json"), spec.task.model_dump(mode="json"),
                      spec.search.seed, str(cache_dir())], sort_keys=True)
    if key not in _LAST:
        _LAST.clear()
        _LAST[key] = prepare(spec, log=log)
    else:
        log("base model, data and importance: reused from this process")
    return _LAST[key]


def _idle_cores() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    busy = int(os.getloadavg()[0] + 0.5) if hasattr(os, "getloadavg") else 0
    return max(1, (cores or 1) - busy)


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False
