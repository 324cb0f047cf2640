"""DynaBERT rewiring, and running a sub-network inside the full supernet with masks."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from paretoforge.exceptions import BuildError
from paretoforge.models.adapters import adapter_for, in_features
from paretoforge.models.importance import Importance
from paretoforge.models.surgery import PrunePlan, _check_plan, head_indices, slice_heads

__all__ = ["masked", "rewire"]


# -- rewiring -----------------------------------------------------------------------------


def _descending(scores: Sequence[float]) -> list[int]:
    """Indices by score, highest first; ties keep the lower index first (as ``_top_k``)."""
    return sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))


def rewire(model: nn.Module, importance: Importance) -> tuple[nn.Module, Importance]:
    """A copy of ``model`` whose heads and FFN neurons are reordered by importance, descending.

    In each layer, the rows of q/k/v (or of each block of a fused qkv) and the matching input
    columns of the output projection are permuted head by head; the rows of the FFN's up
    projection (and its bias) and the input columns of its down projection neuron by neuron.
    The function the model computes is unchanged (up to float summation order). Layers are not
    reordered: depth keeps the most important layers by their layer scores.

    Args:
        model: A model of a family with an adapter; left untouched.
        importance: Its importance scores (:func:`~paretoforge.models.importance.
            compute_importance`).

    Returns:
        ``(rewired, rewired_importance)``: the reordered copy (in ``model``'s train/eval mode)
        and the scores permuted the same way, so that :func:`~paretoforge.models.surgery.
        plan_from_importance` of ``rewired_importance`` keeps prefixes.

    Raises:
        BuildError: ``importance`` does not have ``model``'s shapes.

    Example:
        >>> sn, sn_imp = rewire(model, imp)  # doctest: +SKIP
        >>> plan_from_importance(sn_imp, layers_kept=2, heads_kept=2, ffn_kept=0.5).heads
        ... # doctest: +SKIP
        ((0, 1), (0, 1))
    """
    adapter = adapter_for(model)
    new = copy.deepcopy(model)
    layers = adapter.layers(new)
    hd = adapter.head_dim(new)
    if len(importance.layers) != len(layers) or len(importance.neurons) != len(layers):
        raise BuildError(
            f"rewire: the importance scores {len(importance.layers)} layers, the model has "
            f"{len(layers)}; score the model that is rewired."
        )
    heads = np.full(np.shape(importance.heads), np.nan, dtype=np.float64)
    neurons: list[np.ndarray] = []
    for i, layer in enumerate(layers):
        h_scores = importance.head_scores(i)
        n_scores = np.asarray(importance.neurons[i], dtype=np.float64)
        n_heads, width = adapter.num_heads(layer, hd), adapter.ffn_width(layer)
        if len(h_scores) != n_heads or len(n_scores) != width:
            raise BuildError(
                f"rewire: layer {i} has {n_heads} heads and {width} FFN neurons but the "
                f"importance scores {len(h_scores)} and {len(n_scores)}; score the model that "
                "is rewired."
            )
        h_order, n_order = _descending(h_scores), _descending(n_scores)
        slice_heads(adapter, layer, h_order, hd)  # a permutation: every head stays
        adapter.slice_ffn(layer, n_order)
        heads[i, :n_heads] = h_scores[h_order]
        neurons.append(n_scores[n_order])
    rewired = Importance(
        heads=heads, neurons=neurons, layers=np.asarray(importance.layers, np.float64).copy()
    )
    return new.train(model.training), rewired


# -- running a sub-network inside the full model ------------------------------------------



def _with_first(output: Any, new: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return new
    return (new, *output[1:])


def _input_mask_hook(mask: torch.Tensor) -> Callable[..., tuple[Any, ...]]:
    """A forward pre-hook multiplying a projection's input features by ``mask`` (0 / 1)."""

    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        inp = args[0]
        return (inp * mask.to(device=inp.device, dtype=inp.dtype), *args[1:])

    return hook


def _identity_hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    """A dropped layer: its residual branch gated off, ``out = inp``."""
    return _with_first(output, args[0])


@contextlib.contextmanager
def masked(
    model: nn.Module, plan: PrunePlan, *, skip_dropped: bool = False
) -> Iterator[nn.Module]:
    """Run the full ``model`` as the sub-network ``plan`` keeps, for the ``with`` block.

    Hooks zero what ``plan`` (in ``model``'s own indices) drops: a dropped head's features at
    the output projection's input, a dropped neuron's activation at the down projection's
    input; a dropped layer passes its input through (``out = inp``). The outputs are those of
    :func:`~paretoforge.models.surgery.prune` ``(model, plan)`` (to float summation order:
    within 1e-5), with no weights copied; gradients reach the shared weights of what is kept.

    Args:
        model: A model of a family with an adapter (a supernet after :func:`rewire`).
        plan: What the sub-network keeps.
        skip_dropped: Take dropped layers out of the layer list for the block instead of
            gating them: same outputs, less compute, and ``output_hidden_states`` then lists
            the kept layers only, as the pruned model's does (how :class:`SupernetTrainer`
            runs). Default: gated, ``hidden_states`` has one entry per layer.

    Raises:
        BuildError: The plan does not fit the model.

    Example:
        >>> with masked(supernet, space.smallest()):  # doctest: +SKIP
        ...     logits = supernet(x).logits
    """
    adapter = adapter_for(model)
    _check_plan(plan, model, adapter)
    layers = adapter.layers(model)
    hd = adapter.head_dim(model)
    kept = dict(zip(plan.layers, zip(plan.heads, plan.neurons, strict=True), strict=True))
    handles = []
    for i, layer in enumerate(layers):
        if i not in kept:
            if not skip_dropped:
                handles.append(layer.register_forward_hook(_identity_hook))
            continue
        heads, neurons = kept[i]
        n_heads, width = adapter.num_heads(layer, hd), adapter.ffn_width(layer)
        if len(heads) < n_heads:
            unit = in_features(adapter.out_projection(layer)) // n_heads  # a head or a group
            mask = torch.zeros(n_heads * unit)  # (nh * unit,): o's input is unit by unit
            mask[head_indices(heads, unit)] = 1.0
            handles.append(
                adapter.out_projection(layer).register_forward_pre_hook(_input_mask_hook(mask))
            )
        if len(neurons) < width:
            mask = torch.zeros(width)  # (width,)
            mask[list(neurons)] = 1.0
            handles.append(adapter.ffn(layer)[1].register_forward_pre_hook(_input_mask_hook(mask)))
    swapped = skip_dropped and len(plan.layers) < len(layers)
    if swapped:
        adapter.set_layers(model, nn.ModuleList([layers[i] for i in plan.layers]))
    try:
        yield model
    finally:
        for h in handles:
            h.remove()
        if swapped:
            adapter.set_layers(model, layers)
