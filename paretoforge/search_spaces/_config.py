"""The candidate a trial turns into: :class:`CandidateConfig`, canonical and hashable."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from paretoforge.names import Precision

__all__ = ["INT4_ACCURACY_LEVELS", "CandidateConfig", "CustomValue"]

#: ``MatMulNBits`` ``accuracy_level`` values (ONNX Runtime): the type the product is computed
#: in after the 4-bit weights are unpacked. 0: unset (the provider's default, fp32 on CPU);
#: 1: fp32; 2: fp16; 3: bf16; 4: int8 (activations quantized per block: the fast CPU kernel).
Int4AccuracyLevel = Literal[0, 1, 2, 3, 4]
INT4_ACCURACY_LEVELS: tuple[int, ...] = get_args(Int4AccuracyLevel)

#: A custom dimension's value: a JSON scalar (hashable, sortable, the same after JSON).
CustomValue = bool | int | float | str

_Heads = Annotated[int, Field(ge=1)]
_Ffn = Annotated[float, Field(gt=0.0, le=1.0)]


class CandidateConfig(BaseModel):
    """One candidate: how much of the base model to keep, at which weight precision, and the
    values of custom dimensions (:func:`~paretoforge.search_spaces.register_dimension`).

    Which layers, heads and neurons are kept is decided by the importance scores, so the config
    only says how many. ``heads_kept`` and ``ffn_kept`` are one value for every kept layer, or
    a tuple with one entry per kept layer (in the order of the layers in the base model, as in
    HAT); a tuple whose entries are all equal is stored as that one value, so equal candidates
    have one key, and keys of uniform configs are those from before per-layer configs.

    Example:
        >>> a = CandidateConfig(layers_kept=2, heads_kept=(3, 3), ffn_kept=[0.5, 0.5],
        ...                     precision="int8")
        >>> a.heads_kept, a.key == CandidateConfig(layers_kept=2, heads_kept=3, ffn_kept=0.5,
        ...                                        precision="int8").key
        (3, True)
        >>> CandidateConfig(layers_kept=2, heads_kept=(1, 4), ffn_kept=0.5,
        ...                 precision="fp32").heads_per_layer()
        (1, 4)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers_kept: int = Field(ge=1, description="Encoder layers kept (the most important ones).")
    heads_kept: _Heads | tuple[_Heads, ...] = Field(
        description="Attention heads kept in every kept layer, or one count per kept layer."
    )
    ffn_kept: _Ffn | tuple[_Ffn, ...] = Field(
        description="Fraction of FFN neurons kept per layer: one for every kept layer, or one "
        "per kept layer."
    )
    precision: Precision = Field(
        description="Weight precision of the ONNX model: fp32, int8 (dynamic), int8-static "
        "(activations calibrated on the training split), fp16 (float16 graph, for GPUs; runs "
        "on CPU too) or int4 (4-bit weight-only MatMulNBits, blocks of 32, fp32 activations)."
    )
    int4_accuracy_level: Int4AccuracyLevel = Field(
        default=0,
        description="int4 only: the MatMulNBits accuracy_level, the type the product is "
        "computed in (0 unset = fp32 on CPU, 1 fp32, 2 fp16, 3 bf16, 4 int8 with activations "
        "quantized per block). Optional dimension: absent means 0; a config of another "
        "precision always holds 0 (the level changes nothing there).",
    )
    fusion: bool = Field(
        default=False,
        description="Run ONNX Runtime's transformer graph fusions (Attention, "
        "SkipLayerNormalization, Gelu, ...) on the exported graph before the precision step. "
        "Optional dimension: absent means False.",
    )
    custom: tuple[tuple[str, CustomValue], ...] = Field(
        default=(),
        description="Values of custom dimensions (registered with register_dimension) that are "
        "not at their default, as a mapping; absent means every custom dimension at its "
        "default (the candidate unchanged by it).",
    )

    @model_validator(mode="before")
    @classmethod
    def _level_only_for_int4(cls, data: Any) -> Any:
        # One config (one key) per graph: fp32 at level 4 is fp32 at level 0.
        if isinstance(data, dict) and data.get("precision") != "int4":
            data = {k: v for k, v in data.items() if k != "int4_accuracy_level"}
        return data

    @field_validator("heads_kept", "ffn_kept", mode="before")
    @classmethod
    def _uniform_if_equal(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)) and v and all(x == v[0] for x in v):
            return v[0]
        return tuple(v) if isinstance(v, list) else v

    @field_validator("ffn_kept")
    @classmethod
    def _ffn_float(cls, v: float | tuple[float, ...]) -> float | tuple[float, ...]:
        return tuple(float(x) for x in v) if isinstance(v, tuple) else float(v)

    @field_validator("custom", mode="before")
    @classmethod
    def _custom_pairs(cls, v: Any) -> Any:
        items = v.items() if isinstance(v, dict) else v
        pairs = [tuple(p) for p in items]
        names = [p[0] for p in pairs if p]
        if len(set(names)) != len(names):
            raise ValueError(f"custom: {names} names a dimension twice")
        return tuple(sorted(pairs, key=lambda p: str(p[0]) if p else ""))

    @model_validator(mode="after")
    def _one_per_layer(self) -> CandidateConfig:
        for name in ("heads_kept", "ffn_kept"):
            v = getattr(self, name)
            if isinstance(v, tuple) and len(v) != self.layers_kept:
                raise ValueError(
                    f"{name}: {list(v)} has {len(v)} entries for layers_kept={self.layers_kept}; "
                    "give one per kept layer, or a single value for every layer"
                )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler,
              info: SerializationInfo) -> dict[str, Any]:
        data = handler(self)
        if not self.custom:  # configs without custom dimensions dump as they always did
            data.pop("custom", None)
        else:
            data["custom"] = dict(self.custom)
        return data

    def canonical_json(self) -> str:
        """Sorted, compact JSON of the config; optional dimensions at their default
        (``fusion`` False, ``int4_accuracy_level`` 0, no custom values) are left out, so
        keys of configs from before them are unchanged."""
        data = self.model_dump(mode="json")
        for name in _OPTIONAL_DIMENSIONS:
            if data.get(name) == CandidateConfig.model_fields[name].default:
                del data[name]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @property
    def key(self) -> str:
        """Stable content hash: equal configs never build twice."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def heads_per_layer(self) -> tuple[int, ...]:
        """Heads kept in each kept layer (``layers_kept`` entries)."""
        h = self.heads_kept
        return h if isinstance(h, tuple) else (h,) * self.layers_kept

    def ffn_per_layer(self) -> tuple[float, ...]:
        """FFN fraction kept in each kept layer (``layers_kept`` entries)."""
        f = self.ffn_kept
        return f if isinstance(f, tuple) else (f,) * self.layers_kept

    def custom_value(self, name: str, default: Any = None) -> Any:
        """The value of custom dimension ``name`` (``default`` when it is at its default)."""
        return dict(self.custom).get(name, default)

    def compute_fraction(self, num_layers: int, num_heads: int) -> float:
        """The share of the base encoder's compute per token that the config keeps.

        Each kept layer counts its share of heads for a third (the attention projections)
        and its FFN fraction for two thirds (an FFN 4x the hidden width, as in BERT and
        ViT), summed over the kept layers and divided by the base's ``num_layers``.

        Example:
            >>> CandidateConfig(layers_kept=1, heads_kept=2, ffn_kept=0.5,
            ...                 precision="fp32").compute_fraction(4, 4)
            0.125
        """
        kept = sum(h / num_heads / 3 + 2 * f / 3
                   for h, f in zip(self.heads_per_layer(), self.ffn_per_layer(), strict=True))
        return kept / num_layers

    def is_unpruned(self, num_layers: int, num_heads: int) -> bool:
        """Whether the config keeps the whole base model (custom dimensions aside)."""
        return (
            self.layers_kept == num_layers
            and self.heads_kept == num_heads
            and self.ffn_kept == 1.0
        )


#: Dimensions a space may leave out (the config's default then applies to every candidate).
_OPTIONAL_DIMENSIONS: tuple[str, ...] = ("fusion", "int4_accuracy_level")
