"""Structured pruning by real weight surgery: drop layers, attention heads and FFN neurons.

A :class:`PrunePlan` says what to keep; :func:`prune` returns a new, smaller dense model whose
kept weights are the original ones (weight inheritance), with no masks left in its graph.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from paretoforge.exceptions import BuildError
from paretoforge.models.adapters import (
    SOURCE_LAYERS_ATTR,
    FamilyAdapter,
    adapter_for,
    slice_projection,
)

if TYPE_CHECKING:
    from paretoforge.models.importance import Importance

__all__ = [
    "PrunePlan",
    "head_indices",
    "identity_plan",
    "plan_from_importance",
    "prune",
    "slice_heads",
    "slice_linear",
]


@dataclass(frozen=True)
class PrunePlan:
    """What a pruned model keeps, in original indices.

    Attributes:
        layers: Kept layer indices of the original model, ascending.
        heads: For each kept layer (same order as ``layers``), its kept head indices, ascending.
        neurons: For each kept layer, its kept FFN neuron indices, ascending.

    Example:
        >>> plan = PrunePlan(layers=(0, 2), heads=((0, 1), (3,)), neurons=((0, 5, 7), (1, 2)))
        >>> plan.to_dict()["layers"]
        [0, 2]
    """

    layers: tuple[int, ...]
    heads: tuple[tuple[int, ...], ...]
    neurons: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        # Normalise lists / numpy ints so that equal plans compare and hash equal.
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        object.__setattr__(self, "heads", tuple(tuple(int(h) for h in hs) for hs in self.heads))
        object.__setattr__(
            self, "neurons", tuple(tuple(int(n) for n in ns) for ns in self.neurons)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "layers": list(self.layers),
            "heads": [list(h) for h in self.heads],
            "neurons": [list(n) for n in self.neurons],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrunePlan:
        """Inverse of :meth:`to_dict`."""
        return cls(layers=data["layers"], heads=data["heads"], neurons=data["neurons"])


def head_indices(heads: Sequence[int], head_dim: int) -> torch.Tensor:
    """Feature indices of the given heads in a ``(num_heads * head_dim)`` projection."""
    idx = torch.as_tensor(list(heads), dtype=torch.long)
    return (idx[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)  # (len(heads) * hd,)


def slice_linear(
    linear: nn.Linear,
    out_idx: torch.Tensor | Sequence[int] | None = None,
    in_idx: torch.Tensor | Sequence[int] | None = None,
) -> None:
    """Keep only rows ``out_idx`` (outputs) and columns ``in_idx`` (inputs) of ``linear``.

    Works in place (see :func:`paretoforge.models.adapters.slice_projection`, which also
    handles GPT-2's ``Conv1D``). The bias follows the outputs.
    """
    slice_projection(linear, out_idx=out_idx, in_idx=in_idx)


def slice_heads(
    adapter: FamilyAdapter, layer: nn.Module, heads: Sequence[int], head_dim: int
) -> None:
    """Keep only attention ``heads`` of ``layer``: rows of q/k/v (or of each fused block), and
    the matching inputs of the output projection. In place; attributes are synced later."""
    # Read before slicing: a unit is per[i] heads of projection i (a GQA group: its query
    # heads in q, its one head in k and v).
    units = adapter.num_heads(layer, head_dim)
    per = adapter.unit_heads(layer, head_dim)
    for proj, k in zip(adapter.head_projections(layer), per, strict=True):
        feat = head_indices(_expand(heads, k), head_dim)  # (len(heads) * k * hd,)
        # A fused projection holds head_sections blocks of (units * k * hd) features: q | k | v.
        block = units * k * head_dim
        idx = torch.cat([feat + s * block for s in range(adapter.head_sections)])
        slice_projection(proj, out_idx=idx)
    slice_projection(adapter.out_projection(layer),
                     in_idx=head_indices(_expand(heads, per[0]), head_dim))


def _expand(units: Sequence[int], k: int) -> list[int]:
    """Head indices of ``units`` of ``k`` consecutive heads each (unit ``u``: ``u*k..``)."""
    return [int(u) * k + j for u in units for j in range(k)]


def identity_plan(model: nn.Module) -> PrunePlan:
    """The plan that keeps everything ``model`` has now."""
    adapter = adapter_for(model)
    hd = adapter.head_dim(model)
    layers = adapter.layers(model)
    return PrunePlan(
        layers=tuple(range(len(layers))),
        heads=tuple(tuple(range(adapter.num_heads(layer, hd))) for layer in layers),
        neurons=tuple(tuple(range(adapter.ffn_width(layer))) for layer in layers),
    )


def _top_k(scores: Sequence[float], k: int) -> tuple[int, ...]:
    """Indices of the ``k`` highest scores, ascending; ties go to the lower index."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return tuple(sorted(order[:k]))


def _count(name: str, value: int, available: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise BuildError(f"{name} must be an integer, got {value!r}.")
    if not 1 <= value <= available:
        raise BuildError(f"{name}={value} is out of range: must be between 1 and {available}.")
    return int(value)


def plan_from_importance(
    imp: Importance, *, layers_kept: int, heads_kept: int | Sequence[int],
    ffn_kept: float | int | Sequence[float | int]
) -> PrunePlan:
    """Keep the most important layers, and in each the most important heads and neurons.

    Args:
        imp: Importance scores of the model to prune.
        layers_kept: Number of layers to keep (top by layer importance).
        heads_kept: Heads to keep in every kept layer (top by head importance in that layer),
            or one count per kept layer, in the order of the kept layers in the model.
        ffn_kept: FFN neurons to keep per kept layer: a float in (0, 1] is a fraction of the
            layer's width (rounded, at least 1), an int is a count; or one of those per kept
            layer, in the order of the kept layers in the model.

    Raises:
        BuildError: A count is out of range for the model, or a per-layer sequence does not
            have one entry per kept layer.

    Example:
        >>> plan = plan_from_importance(imp, layers_kept=3, heads_kept=2, ffn_kept=0.5)
        ... # doctest: +SKIP
        >>> plan = plan_from_importance(imp, layers_kept=2, heads_kept=(4, 1),
        ...                             ffn_kept=(1.0, 0.25))  # doctest: +SKIP
    """
    n_layers = len(imp.layers)
    layers_kept = _count("layers_kept", layers_kept, n_layers)
    layers = _top_k(list(imp.layers), layers_kept)
    head_counts = _per_layer("heads_kept", heads_kept, layers_kept)
    ffn_values = _per_layer("ffn_kept", ffn_kept, layers_kept)
    heads: list[tuple[int, ...]] = []
    neurons: list[tuple[int, ...]] = []
    for li, h, f in zip(layers, head_counts, ffn_values, strict=True):
        head_scores = list(imp.head_scores(li))
        heads.append(_top_k(head_scores, _count("heads_kept", h, len(head_scores))))
        neurons.append(_top_k(list(imp.neurons[li]), _ffn_count(f, len(imp.neurons[li]))))
    return PrunePlan(layers=layers, heads=tuple(heads), neurons=tuple(neurons))


def _per_layer(name: str, value: Any, layers_kept: int) -> list[Any]:
    """``value`` for each kept layer: a scalar repeated, or a sequence of ``layers_kept``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return [value] * layers_kept
    if len(value) != layers_kept:
        raise BuildError(f"{name}={list(value)} has {len(value)} entries for layers_kept="
                         f"{layers_kept}; give one per kept layer, or a single value.")
    return list(value)


def _ffn_count(ffn_kept: Any, width: int) -> int:
    if isinstance(ffn_kept, bool) or not isinstance(ffn_kept, numbers.Real):
        raise BuildError(f"ffn_kept must be a fraction or a count, got {ffn_kept!r}.")
    if isinstance(ffn_kept, numbers.Integral):
        return _count("ffn_kept", ffn_kept, width)
    if not 0.0 < float(ffn_kept) <= 1.0 or not math.isfinite(float(ffn_kept)):
        raise BuildError(
            f"ffn_kept={ffn_kept!r} as a fraction must be in (0, 1]; "
            "pass an int to give a count of neurons."
        )
    return max(1, round(float(ffn_kept) * width))


def _check_plan(plan: PrunePlan, model: nn.Module, adapter: FamilyAdapter) -> None:
    layers = adapter.layers(model)
    hd = adapter.head_dim(model)
    if not plan.layers:
        raise BuildError("PrunePlan keeps no layer; keep at least 1.")
    if list(plan.layers) != sorted(set(plan.layers)):
        raise BuildError(f"PrunePlan.layers must be ascending and unique, got {plan.layers}.")
    if plan.layers[0] < 0 or plan.layers[-1] >= len(layers):
        raise BuildError(
            f"PrunePlan.layers {plan.layers} is out of range for a model of {len(layers)} layers."
        )
    if len(plan.heads) != len(plan.layers) or len(plan.neurons) != len(plan.layers):
        raise BuildError(
            f"PrunePlan has {len(plan.layers)} layers but {len(plan.heads)} head lists and "
            f"{len(plan.neurons)} neuron lists; give one of each per kept layer."
        )
    for li, hs, ns in zip(plan.layers, plan.heads, plan.neurons, strict=True):
        n_heads = adapter.num_heads(layers[li], hd)
        width = adapter.ffn_width(layers[li])
        for what, kept, available in (("heads", hs, n_heads), ("neurons", ns, width)):
            if not kept:
                raise BuildError(f"PrunePlan keeps no {what} in layer {li}; keep at least 1.")
            if list(kept) != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= available:
                raise BuildError(
                    f"PrunePlan {what} of layer {li} must be ascending, unique and in "
                    f"0..{available - 1}, got {kept}."
                )


def prune(model: nn.Module, plan: PrunePlan) -> nn.Module:
    """A new dense model keeping only what ``plan`` keeps; ``model`` is left untouched.

    Heads: outputs of q/k/v (or of each block of a fused qkv, and their biases) and inputs of o
    are sliced head by head; a grouped-query family's unit is a whole key/value group (its
    query heads and its key and value head), so the result is still valid GQA. Neurons:
    outputs of up (and gate, for a gated MLP; their biases) and inputs of down. Layers:
    dropped from the layer list. The config gets ``num_hidden_layers``, ``paretoforge_shapes``
    (per-layer heads and FFN widths) and ``paretoforge_source_layers`` (each kept layer's index
    in the original, unpruned model, composed over repeated pruning).

    Raises:
        BuildError: The plan keeps nothing somewhere, or names indices the model lacks.

    Example:
        >>> small = prune(model, identity_plan(model))  # doctest: +SKIP
    """
    adapter = adapter_for(model)
    _check_plan(plan, model, adapter)
    adapter.check_supported(model.config)
    adapter.check_layers_kept(model, plan.layers)
    n_layers = len(adapter.layers(model))
    source = list(getattr(model.config, SOURCE_LAYERS_ATTR, None) or range(n_layers))
    if len(source) != n_layers:  # a stale record (layers changed outside prune): restart it
        source = list(range(n_layers))
    # The dropped layers are not copied (most of a shallow sub-network's copy): the copy's
    # layer list holds None in their place until set_layers replaces it with the kept ones.
    kept = set(plan.layers)
    memo: dict[int, Any] = {id(layer): None for i, layer in enumerate(adapter.layers(model))
                            if i not in kept}
    new = copy.deepcopy(model, memo)
    hd = adapter.head_dim(model)  # the copy's first layer may be a dropped one
    old_layers = adapter.layers(new)
    kept_layers = nn.ModuleList([old_layers[i] for i in plan.layers])
    for layer, hs, ns in zip(kept_layers, plan.heads, plan.neurons, strict=True):
        slice_heads(adapter, layer, hs, hd)
        adapter.slice_ffn(layer, ns)
    adapter.set_layers(new, kept_layers)
    setattr(new.config, SOURCE_LAYERS_ATTR, [int(source[i]) for i in plan.layers])
    adapter.set_layer_shapes(new)  # after the source record: per-layer config lists follow it
    return new.train(model.training)
