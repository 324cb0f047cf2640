"""Small shared training helpers: seeded batching, augmentation, LR schedule, logits, accuracy."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "Inputs",
    "accuracy",
    "as_input",
    "batch_order",
    "call",
    "logits_of",
    "num_examples",
    "predict_logits",
    "random_affine",
    "take",
    "warmup_cosine",
]

#: Model inputs: one tensor (e.g. ``pixel_values``, passed positionally) or named tensors
#: (e.g. ``input_ids`` and ``attention_mask``, passed as keywords); batch on axis 0.
Inputs = torch.Tensor | dict[str, torch.Tensor]


def logits_of(output: Any) -> torch.Tensor:
    """Logits from a model output: a ``ModelOutput`` with ``.logits``, a tuple, or a tensor."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is not None:
        return logits
    return output[0]


def as_input(x: Any) -> Inputs:
    """``x`` as tensors: floating data as float32, integer data (token ids, masks) kept as is.

    ``x`` is an array / tensor, or a mapping of input name to array / tensor.
    """
    if isinstance(x, dict) or hasattr(x, "keys"):
        return {str(k): as_input(x[k]) for k in x.keys()}  # type: ignore[misc]
    t = torch.as_tensor(x)
    return t.float() if t.is_floating_point() else t


def num_examples(x: Inputs) -> int:
    """Batch size of ``x``; named inputs must agree on it."""
    if isinstance(x, dict):
        sizes = {len(v) for v in x.values()}
        if len(sizes) != 1:
            raise ValueError(f"Named inputs disagree on the number of examples: {sorted(sizes)}")
        return sizes.pop()
    return len(x)


def take(x: Inputs, idx: torch.Tensor | slice) -> Inputs:
    """Rows ``idx`` of every input."""
    if isinstance(x, dict):
        return {k: v[idx] for k, v in x.items()}
    return x[idx]


def call(model: nn.Module, x: Inputs, **kwargs: Any) -> Any:
    """``model(x)`` for one tensor, ``model(**x)`` for named inputs."""
    return model(**x, **kwargs) if isinstance(x, dict) else model(x, **kwargs)


def batch_order(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Yield index batches of one shuffled epoch; the order depends only on ``generator``."""
    perm = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield perm[start : start + batch_size]


def random_affine(
    x: torch.Tensor,
    *,
    rotate_deg: float,
    scale: float,
    shift_px: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Randomly rotate, scale and shift each image a little (bilinear, zero fill).

    Sub-pixel shifts matter on 8x8 digits: whole-pixel shifts cut strokes off the border and
    moved a small ViT's held-out accuracy down, not up.

    Args:
        x: Images shaped ``(B, C, H, W)``.
        rotate_deg: Largest rotation, in degrees, either way.
        scale: Largest relative zoom, either way (0.08 = 92%..108%).
        shift_px: Largest shift in pixels along each axis.
        generator: Source of the random parameters.
    """
    if rotate_deg == 0 and scale == 0 and shift_px == 0:
        return x
    b, _, h, w = x.shape

    def uniform(*shape: int) -> torch.Tensor:  # in [-1, 1)
        return torch.rand(*shape, generator=generator) * 2 - 1

    angle = uniform(b) * (rotate_deg * math.pi / 180)
    zoom = 1 + uniform(b) * scale
    # affine_grid works in [-1, 1] coordinates: one pixel is 2 / size.
    shift = uniform(b, 2) * shift_px * torch.tensor([2 / w, 2 / h])
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )  # (B, 2, 3)
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return nn.functional.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warmup over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def predict_logits(model: nn.Module, x: Any, batch_size: int = 256) -> torch.Tensor:
    """Logits of ``model`` (put in eval mode) on all of ``x``, batched, as one float32 tensor."""
    model.eval()
    xt = as_input(x)
    n = num_examples(xt)
    outs = [
        logits_of(call(model, take(xt, slice(i, i + batch_size)))) for i in range(0, n, batch_size)
    ]
    return torch.cat(outs).float()


def accuracy(model: nn.Module, x: Any, y: np.ndarray | torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``."""
    pred = predict_logits(model, x).argmax(-1)
    return float((pred == torch.as_tensor(y)).float().mean())
