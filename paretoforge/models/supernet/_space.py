"""The sub-networks of a supernet: depth, and per layer heads and FFN width (HAT)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from paretoforge.exceptions import BuildError
from paretoforge.models.importance import Importance
from paretoforge.models.supernet._rewire import _descending
from paretoforge.models.surgery import PrunePlan, _top_k

__all__ = ["SubnetSpace"]


# -- the space of sub-networks ------------------------------------------------------------


def _choices(name: str, values: Sequence[Any], ok: Callable[[Any], bool], rule: str) -> tuple:
    vals = tuple(values)
    if not vals or any(isinstance(v, bool) or not ok(v) for v in vals):
        raise BuildError(f"SubnetSpace.{name}={list(vals)!r} is invalid: {rule}.")
    if list(vals) != sorted(set(vals)):
        raise BuildError(
            f"SubnetSpace.{name}={list(vals)!r} must be ascending without repeats; "
            f"give {sorted(set(vals))}."
        )
    return vals


class SubnetSpace:
    """The sub-networks of a supernet: layers kept, and per layer heads and FFN fraction.

    A sub-network keeps the ``layers_kept`` most important layers (by layer score) and, in
    each kept layer ``i`` of the original model, its ``heads[i]`` most important heads and
    ``round(ffn[i] * width)`` most important FFN neurons (at least 1). Heads and FFN fraction
    may differ from layer to layer (HAT). With the importance of a :func:`rewire` d supernet
    the kept heads and neurons are prefixes ``0..k-1``.

    Args:
        importance: Importance scores of the supernet (the rewired ones).
        layers_kept: Choices of the number of layers; default ``ceil(L/2)..L``.
        heads: Choices of heads per layer; default ``1..H`` (a layer with fewer heads keeps
            all it has).
        ffn: Choices of FFN fraction per layer, in (0, 1]; default ``(0.25, 0.5, 0.75, 1.0)``.

    Raises:
        BuildError: A choice is out of range or the choices are not ascending.

    Example:
        >>> imp = Importance(np.ones((4, 4)), [np.ones(8)] * 4, np.arange(4.0))
        >>> space = SubnetSpace(imp, layers_kept=(2, 4), heads=(1, 4), ffn=(0.5, 1.0))
        >>> space.smallest().layers, space.smallest().heads, space.smallest().neurons[0]
        ((2, 3), ((0,), (0,)), (0, 1, 2, 3))
        >>> space.plan(3, heads=[1, 2, 3, 4], ffn=1.0).heads
        ((0, 1), (0, 1, 2), (0, 1, 2, 3))
    """

    def __init__(
        self,
        importance: Importance,
        *,
        layers_kept: Sequence[int] | None = None,
        heads: Sequence[int] | None = None,
        ffn: Sequence[float] | None = None,
    ) -> None:
        self.importance = importance
        n = len(importance.layers)
        self.num_layers = n
        self.layer_heads = tuple(len(importance.head_scores(i)) for i in range(n))
        self.layer_widths = tuple(len(importance.neurons[i]) for i in range(n))
        max_heads = max(self.layer_heads)
        self.layers_kept: tuple[int, ...] = _choices(
            "layers_kept",
            layers_kept if layers_kept is not None else range(math.ceil(n / 2), n + 1),
            lambda v: isinstance(v, (int, np.integer)) and 1 <= v <= n,
            f"each must be an integer in 1..{n} (the model's layers)",
        )
        self.heads: tuple[int, ...] = _choices(
            "heads",
            heads if heads is not None else range(1, max_heads + 1),
            lambda v: isinstance(v, (int, np.integer)) and 1 <= v <= max_heads,
            f"each must be an integer in 1..{max_heads} (heads per layer)",
        )
        self.ffn: tuple[float, ...] = tuple(float(f) for f in _choices(
            "ffn",
            ffn if ffn is not None else (0.25, 0.5, 0.75, 1.0),
            lambda v: isinstance(v, (int, float)) and 0.0 < float(v) <= 1.0,
            "each must be a fraction in (0, 1] of the layer's FFN width",
        ))  # fmt: skip
        self.layers_kept = tuple(int(v) for v in self.layers_kept)
        self.heads = tuple(int(v) for v in self.heads)

    @property
    def layer_ranking(self) -> tuple[int, ...]:
        """Layer indices by layer score, most important first (depth keeps a prefix of it)."""
        return tuple(_descending(list(self.importance.layers)))

    def _per_layer(self, name: str, value: Any) -> list[Any]:
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, bool
        ):
            return [value] * self.num_layers
        values = list(value)
        if len(values) != self.num_layers:
            raise BuildError(
                f"SubnetSpace.plan: {name} gives {len(values)} values; give one for every "
                f"layer of the original model ({self.num_layers}), or a single value."
            )
        return values

    def plan(
        self, layers_kept: int, heads: int | Sequence[int], ffn: float | Sequence[float]
    ) -> PrunePlan:
        """The :class:`PrunePlan` of one sub-network.

        Args:
            layers_kept: Number of layers (the top of :attr:`layer_ranking`).
            heads: Heads per layer: one count for all, or one per layer of the original model
                (entries of dropped layers are ignored); counts above a layer's heads keep all.
            ffn: FFN fraction per layer, the same way; ``round(f * width)``, at least 1.

        Raises:
            BuildError: A value is out of range.
        """
        if isinstance(layers_kept, bool) or not 1 <= int(layers_kept) <= self.num_layers:
            raise BuildError(
                f"SubnetSpace.plan: layers_kept={layers_kept!r} must be in 1..{self.num_layers}."
            )
        hs, fs = self._per_layer("heads", heads), self._per_layer("ffn", ffn)
        kept = tuple(sorted(self.layer_ranking[: int(layers_kept)]))
        plan_heads, plan_neurons = [], []
        for li in kept:
            h, f = hs[li], fs[li]
            if isinstance(h, bool) or int(h) != h or h < 1:
                raise BuildError(f"SubnetSpace.plan: heads[{li}]={h!r} must be an integer >= 1.")
            if not 0.0 < float(f) <= 1.0:
                raise BuildError(f"SubnetSpace.plan: ffn[{li}]={f!r} must be in (0, 1].")
            k_heads = min(int(h), self.layer_heads[li])
            k_neurons = max(1, round(float(f) * self.layer_widths[li]))
            plan_heads.append(_top_k(list(self.importance.head_scores(li)), k_heads))
            plan_neurons.append(_top_k(list(self.importance.neurons[li]), k_neurons))
        return PrunePlan(layers=kept, heads=tuple(plan_heads), neurons=tuple(plan_neurons))

    def largest(self) -> PrunePlan:
        """The largest sub-network: most layers, most heads and widest FFN of the choices."""
        return self.plan(self.layers_kept[-1], self.heads[-1], self.ffn[-1])

    def smallest(self) -> PrunePlan:
        """The smallest sub-network: fewest layers, fewest heads, narrowest FFN."""
        return self.plan(self.layers_kept[0], self.heads[0], self.ffn[0])

    def sample(self, rng: np.random.Generator) -> PrunePlan:
        """A sub-network drawn uniformly: layers kept, then heads and FFN for every layer.

        ``1 + 2 L`` draws whatever the depth drawn, so the same generator state gives the same
        sequence of sub-networks on every worker.
        """
        depth = self.layers_kept[int(rng.integers(len(self.layers_kept)))]
        heads = [self.heads[int(i)] for i in rng.integers(len(self.heads), size=self.num_layers)]
        ffn = [self.ffn[int(i)] for i in rng.integers(len(self.ffn), size=self.num_layers)]
        return self.plan(depth, heads, ffn)

    def size(self) -> int:
        """How many distinct sub-networks the choices name (counted per depth)."""
        return sum(
            (len(self.heads) * len(self.ffn)) ** k for k in self.layers_kept
        )

    def to_dict(self) -> dict[str, Any]:
        """The choices, JSON-able (the importance is saved beside them)."""
        return {"layers_kept": list(self.layers_kept), "heads": list(self.heads),
                "ffn": list(self.ffn)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any], importance: Importance) -> SubnetSpace:
        """Inverse of :meth:`to_dict`, with the importance the space selects by."""
        return cls(importance, layers_kept=data["layers_kept"], heads=data["heads"],
                   ffn=data["ffn"])  # fmt: skip

    def __repr__(self) -> str:
        return (f"SubnetSpace(layers_kept={self.layers_kept}, heads={self.heads}, "
                f"ffn={self.ffn}, size={self.size()})")  # fmt: skip
