"""The built-in recipe: a small Hugging Face ViT trained from scratch on an image task.

The recipe is data (a frozen dataclass); its canonical JSON, with the task's split, names the
cache directory of the trained base model, so a base model is trained once per recipe and split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from paretoforge._io import atomic_write_json
from paretoforge.exceptions import BuildError, SpecError
from paretoforge.models._train import (
    accuracy,
    batch_order,
    logits_of,
    random_affine,
    warmup_cosine,
)
from paretoforge.models.io import load_pretrained, save_pretrained

if TYPE_CHECKING:
    from transformers import ViTForImageClassification

    from paretoforge.tasks import TaskData

__all__ = [
    "DEFAULT_DIGITS_RECIPE",
    "ViTRecipe",
    "build_vit",
    "get_base_model",
    "recipe_key",
    "train_base",
]


@dataclass(frozen=True)
class ViTRecipe:
    """Architecture and training hyper-parameters of a ViT trained from scratch.

    Attributes:
        image_size: Side of the square input image, in pixels.
        patch_size: Side of a square patch; ``image_size`` must be a multiple of it.
        num_channels: Input channels.
        hidden_size: Width of the residual stream; a multiple of ``num_heads``.
        num_layers: Transformer layers.
        num_heads: Attention heads per layer.
        intermediate_size: FFN width per layer.
        num_labels: Number of classes.
        epochs: Training epochs over the task's training split.
        lr: Peak AdamW learning rate.
        batch_size: Training batch size.
        weight_decay: AdamW weight decay.
        warmup_epochs: Epochs of linear LR warmup before the cosine decay.
        label_smoothing: Label smoothing of the cross-entropy.
        aug_rotate_deg: Random rotation augmentation, largest angle in degrees (0 = none).
        aug_scale: Random zoom augmentation, largest relative change (0 = none).
        aug_shift_px: Random sub-pixel shift augmentation, largest shift in pixels (0 = none).
        dropout: Dropout of the hidden states and attention probabilities while training.
        init_std: Std of the initial weights (``initializer_range``); transformers' 0.02 is
            made for wide models and trains this small one to a worse optimum.
        seed: Seed of the initial weights, the data order and the augmentation.

    Example:
        >>> from paretoforge.models.vit import ViTRecipe, build_vit
        >>> recipe = ViTRecipe(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
        >>> build_vit(recipe).config.num_hidden_layers
        2
    """

    image_size: int = 8
    patch_size: int = 2
    num_channels: int = 1
    hidden_size: int = 64
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 256
    num_labels: int = 10
    epochs: int = 60
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.05
    warmup_epochs: int = 3
    label_smoothing: float = 0.1
    aug_rotate_deg: float = 8.0
    aug_scale: float = 0.08
    aug_shift_px: float = 0.4
    dropout: float = 0.0
    init_std: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        floats = ("lr", "weight_decay", "label_smoothing", "aug_rotate_deg", "aug_scale",
                  "aug_shift_px", "dropout", "init_std")  # fmt: skip
        for name in floats:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SpecError(f"ViTRecipe.{name} must be a number, got {value!r}.")
            # 8 and 8.0 must give the same canonical JSON, hence the same cache key.
            object.__setattr__(self, name, float(value))
        positive = (
            "image_size", "patch_size", "num_channels", "hidden_size", "num_layers",
            "num_heads", "intermediate_size", "num_labels", "epochs", "batch_size",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"ViTRecipe.{name} must be a positive integer, got {value!r}.")
        for name in ("warmup_epochs", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SpecError(f"ViTRecipe.{name} must be an integer >= 0, got {value!r}.")
        if self.hidden_size % self.num_heads:
            raise SpecError(
                f"ViTRecipe.hidden_size ({self.hidden_size}) must be a multiple of num_heads "
                f"({self.num_heads}); change one of them."
            )
        if self.image_size % self.patch_size:
            raise SpecError(
                f"ViTRecipe.image_size ({self.image_size}) must be a multiple of patch_size "
                f"({self.patch_size})."
            )
        for name in ("aug_rotate_deg", "aug_scale", "aug_shift_px", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise SpecError(f"ViTRecipe.{name} must be >= 0, got {getattr(self, name)!r}.")
        if not self.init_std > 0:
            raise SpecError(f"ViTRecipe.init_std must be > 0, got {self.init_std!r}.")
        if not self.lr > 0:
            raise SpecError(f"ViTRecipe.lr must be > 0, got {self.lr!r}.")
        if not 0 <= self.dropout < 1:
            raise SpecError(f"ViTRecipe.dropout must be in [0, 1), got {self.dropout!r}.")
        if not 0 <= self.label_smoothing < 1:
            raise SpecError(
                f"ViTRecipe.label_smoothing must be in [0, 1), got {self.label_smoothing!r}."
            )

    def to_dict(self) -> dict[str, Any]:
        """The recipe as a plain dict (JSON-able)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViTRecipe:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`SpecError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(
                f"Unknown ViTRecipe field(s) {unknown}. Valid fields: {', '.join(sorted(known))}."
            )
        return cls(**data)


DEFAULT_DIGITS_RECIPE = ViTRecipe()


def recipe_key(recipe: ViTRecipe, task: TaskData) -> str:
    """Cache key of a base model: sha256 of the canonical recipe JSON and the task's split."""
    payload = {"recipe": recipe.to_dict(), "task": task.name, "split": task.split}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def build_vit(recipe: ViTRecipe) -> ViTForImageClassification:
    """A freshly initialised ViT for ``recipe`` (weights seeded by ``recipe.seed``).

    Attention is the eager implementation: it exports to ONNX (``dynamo=False``) as plain
    MatMul/Softmax with fewer nodes than SDPA, and is as fast at these sizes.
    """
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=recipe.image_size,
        patch_size=recipe.patch_size,
        num_channels=recipe.num_channels,
        hidden_size=recipe.hidden_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        intermediate_size=recipe.intermediate_size,
        num_labels=recipe.num_labels,
        hidden_dropout_prob=recipe.dropout,
        attention_probs_dropout_prob=recipe.dropout,
        initializer_range=recipe.init_std,
        attn_implementation="eager",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = ViTForImageClassification(config)
    return model.eval()


def train_base(recipe: ViTRecipe, task: TaskData) -> ViTForImageClassification:
    """Train a ViT from scratch on ``task.x_train`` only (never on the held-out split).

    Deterministic for a recipe: weights, data order and augmentation all derive from
    ``recipe.seed``. Uses whatever ``torch.get_num_threads()`` the caller set.

    Returns:
        The trained model, in eval mode.
    """
    if task.num_classes != recipe.num_labels:
        raise SpecError(
            f"Recipe has num_labels={recipe.num_labels} but task {task.name!r} has "
            f"{task.num_classes} classes; set num_labels={task.num_classes}."
        )
    model = build_vit(recipe)
    x = torch.as_tensor(task.x_train, dtype=torch.float32)
    y = torch.as_tensor(task.y_train, dtype=torch.long)
    gen = torch.Generator().manual_seed(recipe.seed)
    opt = _adamw(model, recipe.lr, recipe.weight_decay)
    steps_per_epoch = -(-len(x) // recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    warmup = recipe.warmup_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warmup))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    model.train()
    for _ in range(recipe.epochs):
        for idx in batch_order(len(x), recipe.batch_size, gen):
            xb = random_affine(
                x[idx],
                rotate_deg=recipe.aug_rotate_deg,
                scale=recipe.aug_scale,
                shift_px=recipe.aug_shift_px,
                generator=gen,
            )
            loss = loss_fn(logits_of(model(xb)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def _adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW that does not decay biases, norms and embeddings-like 1-d parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def get_base_model(
    recipe: ViTRecipe, task: TaskData, cache_dir: str | os.PathLike[str]
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained base model for ``(recipe, task)``: trained once, then loaded from the cache.

    The cache entry ``cache_dir/<recipe_key>/`` holds ``model.safetensors``, ``config.json`` and
    ``info.json``; it is written into a temporary directory and renamed into place, so a crash
    never leaves a half-written entry, and two concurrent trainers both end up with one entry.

    Returns:
        ``(model, info)``: the model in eval mode and ``info`` with ``heldout_accuracy``,
        ``train_seconds``, ``recipe``, ``task``, ``key`` and ``cached`` (True when loaded).

    Example:
        >>> from paretoforge.tasks import load_task
        >>> model, info = get_base_model(  # doctest: +SKIP
        ...     DEFAULT_DIGITS_RECIPE, load_task("digits"), "cache")  # trains: ~1 min
        >>> info["heldout_accuracy"] > 0.95  # doctest: +SKIP
        True
    """
    key = recipe_key(recipe, task)
    final = Path(cache_dir) / key
    if (final / "info.json").is_file():
        return _load_cached(final)

    start = time.perf_counter()
    model = train_base(recipe, task)
    info = {
        "key": key,
        "recipe": recipe.to_dict(),
        "task": task.describe(),
        "train_seconds": round(time.perf_counter() - start, 3),
        "torch_threads": torch.get_num_threads(),
        "heldout_accuracy": accuracy(model, task.x_validation, task.y_validation),
    }
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}.", suffix=".tmp"))
    try:
        save_pretrained(model, tmp)
        atomic_write_json(tmp / "info.json", info)
        tmp.chmod(0o755)  # mkdtemp makes it private; the entry is an ordinary cache directory
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished first; its entry is equivalent, keep it.
            if not (final / "info.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # The entry as every later run loads it (its config gains what saving writes): the
    # bundle's content key, and the supernet's built on it, are the same in a resumed run.
    return load_pretrained(final), {**info, "cached": False}


def _load_cached(directory: Path) -> tuple[nn.Module, dict[str, Any]]:
    try:
        info = json.loads((directory / "info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildError(
            f"Base model cache entry {str(directory)!r} has an unreadable info.json ({exc}); "
            "delete that directory to retrain."
        ) from exc
    return load_pretrained(directory), {**info, "cached": True}
