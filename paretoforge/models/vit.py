"""The built-in recipe: a small Hugging Face ViT trained from scratch on an image task.

The recipe is data (a frozen dataclass); its canonical JSON, with the task's split, names the
cache directory of the trained base model, so a base model is trained once per recipe and split.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
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
from paretoforge.models.vit_recipe import DEFAULT_DIGITS_RECIPE, ViTRecipe

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
