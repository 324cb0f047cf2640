"""Search spaces: dimensions and presets, and the CandidateConfig a trial turns into.

A preset is data (a name, a description, each dimension's choices); a spec may replace a
dimension's choices, or declare every dimension itself without a preset (``preset: null``).
A preset may mark dimensions as ``fit_to_model``: choices the base model cannot have (more
layers or heads than it owns) are dropped and its own count is added, so one generic preset
(``encoder-prune``) fits any encoder checkpoint. ``SearchSpace.suggest(trial)`` asks Optuna
for one value per dimension and returns a canonical, hashable :class:`CandidateConfig`.

Example:
    >>> import optuna
    >>> space = SearchSpace.from_preset("vit-prune")
    >>> study = optuna.create_study(directions=["maximize", "minimize"])
    >>> cfg = space.suggest(study.ask())
    >>> len(cfg.key)
    16
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from paretoforge.exceptions import SpecError
from paretoforge.names import Precision
from paretoforge.registry import Registry

__all__ = ["SPACES", "CandidateConfig", "SearchSpace", "SpacePreset"]


class CandidateConfig(BaseModel):
    """One candidate: how much of the base model to keep, and at which weight precision.

    Which layers, heads and neurons are kept is decided by the importance scores, so the config
    only says how many.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers_kept: int = Field(ge=1, description="Encoder layers kept (the most important ones).")
    heads_kept: int = Field(ge=1, description="Attention heads kept in every kept layer.")
    ffn_kept: float = Field(gt=0.0, le=1.0, description="Fraction of FFN neurons kept per layer.")
    precision: Precision = Field(
        description="Weight precision of the ONNX model: fp32, int8 (dynamic), int8-static "
        "(activations calibrated on the training split), fp16 (float16 graph, for GPUs; runs "
        "on CPU too) or int4 (4-bit weight-only MatMulNBits, blocks of 32, fp32 activations)."
    )
    fusion: bool = Field(
        default=False,
        description="Run ONNX Runtime's transformer graph fusions (Attention, "
        "SkipLayerNormalization, Gelu, ...) on the exported graph before the precision step. "
        "Optional dimension: absent means False.",
    )

    def canonical_json(self) -> str:
        """Sorted, compact JSON of the config; optional dimensions at their default
        (``fusion`` False) are left out, so keys of configs from before them are unchanged."""
        data = self.model_dump(mode="json")
        for name in _OPTIONAL_DIMENSIONS:
            if data[name] == CandidateConfig.model_fields[name].default:
                del data[name]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @property
    def key(self) -> str:
        """Stable content hash: equal configs never build twice."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def is_unpruned(self, num_layers: int, num_heads: int) -> bool:
        return (
            self.layers_kept == num_layers
            and self.heads_kept == num_heads
            and self.ffn_kept == 1.0
        )


#: Dimensions a space may leave out (the config's default then applies to every candidate).
_OPTIONAL_DIMENSIONS: tuple[str, ...] = ("fusion",)


class SpacePreset(BaseModel):
    """A named set of dimensions with their choices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str
    dimensions: dict[str, tuple[Any, ...]]
    fit_to_model: tuple[str, ...] = ()


SPACES: Registry[SpacePreset] = Registry("search-space preset")

SPACES.add(
    "vit-prune",
    SpacePreset(
        description="Structured pruning of a ViT (layers, heads per layer, FFN width) "
        "x weight precision (fp32, dynamic int8).",
        dimensions={
            "layers_kept": (1, 2, 3, 4),
            "heads_kept": (1, 2, 3, 4),
            "ffn_kept": (0.25, 0.5, 0.75, 1.0),
            "precision": ("fp32", "int8"),
        },
    ),
)


SPACES.add(
    "encoder-prune",
    SpacePreset(
        description="Structured pruning of any supported encoder checkpoint (BERT, MiniLM, "
        "RoBERTa, DistilBERT): layers, heads per layer, FFN width x precision (fp32, dynamic "
        "int8, static int8). Layer and head choices fit the checkpoint: counts above its own "
        "are dropped and its own count is added.",
        dimensions={
            "layers_kept": (1, 2, 3, 4, 6, 8, 12),
            "heads_kept": (2, 3, 4, 6, 8, 12),
            "ffn_kept": (0.25, 0.5, 0.75, 1.0),
            "precision": ("fp32", "int8", "int8-static"),
        },
        fit_to_model=("layers_kept", "heads_kept"),
    ),
)


SPACES.add(
    "decoder-prune",
    SpacePreset(
        description="Structured pruning of a decoder checkpoint (GPT-2, Llama, Qwen2/3, "
        "Mistral): layers, attention heads per layer (for grouped-query attention: key/value "
        "groups, each with its query heads), FFN width x precision (fp32, dynamic int8). Layer "
        "and head choices fit the checkpoint.",
        dimensions={
            "layers_kept": (1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
            "heads_kept": (1, 2, 4, 8, 12),
            "ffn_kept": (0.25, 0.5, 0.75, 1.0),
            "precision": ("fp32", "int8"),
        },
        fit_to_model=("layers_kept", "heads_kept"),
    ),
)


class SearchSpace:
    """The dimensions of one search, each a tuple of choices.

    Args:
        dimensions: Every dimension of :class:`CandidateConfig` with its choices; the
            optional ones (``fusion``) may be left out, their default then applies.
        fit_to_model: Dimensions (``layers_kept``, ``heads_kept``) whose choices
            :meth:`check_model` fits to the base model instead of rejecting.
    """

    def __init__(self, dimensions: dict[str, tuple[Any, ...]],
                 fit_to_model: tuple[str, ...] = ()) -> None:
        fields = set(CandidateConfig.model_fields)
        unknown = sorted(set(dimensions) - fields)
        missing = sorted(fields - set(dimensions) - set(_OPTIONAL_DIMENSIONS))
        if unknown or missing:
            raise SpecError(
                f"space.dimensions: unknown {unknown} / missing {missing}; "
                f"the dimensions are {sorted(fields)}"
            )
        for name, choices in dimensions.items():
            if not choices:
                raise SpecError(f"space.dimensions.{name}: needs at least one choice")
            if len(set(choices)) != len(choices):
                raise SpecError(f"space.dimensions.{name}: {list(choices)} repeats a choice")
            for c in choices:  # validate every choice through the config's own field rules
                try:
                    CandidateConfig.__pydantic_validator__.validate_assignment(
                        CandidateConfig.model_construct(), name, c
                    )
                except Exception as e:
                    msg = str(e).splitlines()[-1].strip()
                    raise SpecError(f"space.dimensions.{name}: bad choice {c!r}: {msg}") from None
        self.dimensions = {k: tuple(sorted(v, key=_sort_key)) for k, v in dimensions.items()}
        self.fit_to_model = tuple(fit_to_model)

    @classmethod
    def from_preset(cls, name: str | None,
                    overrides: dict[str, list[Any]] | None = None) -> SearchSpace:
        """The preset ``name`` with ``overrides`` replacing choices; ``name=None``: a space
        declared wholly by ``overrides`` (every dimension, validated the same way).

        Example:
            >>> SearchSpace.from_preset(None, {"layers_kept": [1, 2], "heads_kept": [2],
            ...     "ffn_kept": [0.5, 1.0], "precision": ["fp32"]}).size()
            4
        """
        if name is None:
            if not overrides:
                raise SpecError(
                    "space: without a preset, space.dimensions must declare every dimension "
                    f"({', '.join(_required_dimensions())}; optionally "
                    f"{', '.join(_OPTIONAL_DIMENSIONS)}), each with a list of choices"
                )
            return cls({k: tuple(v) for k, v in overrides.items()})
        preset = SPACES.get(name)
        dims = dict(preset.dimensions)
        for k, v in (overrides or {}).items():
            if k not in dims and k not in _OPTIONAL_DIMENSIONS:
                raise SpecError(
                    f"space.dimensions: unknown dimension {k!r} for preset {name!r}; "
                    f"its dimensions are {sorted(dims)}"
                )
            dims[k] = tuple(v)
        fit = tuple(d for d in preset.fit_to_model if d not in (overrides or {}))
        return cls(dims, fit_to_model=fit)

    def suggest(self, trial: Any) -> CandidateConfig:
        """Ask ``trial`` for one value per dimension (called once per trial, by the driver)."""
        params = {k: trial.suggest_categorical(k, list(v)) for k, v in self.dimensions.items()}
        return CandidateConfig(**params)

    def base_params(self, num_layers: int, num_heads: int) -> dict[str, Any]:
        """Params of the unpruned fp32 base model (unfused), enqueued as trial 0."""
        params: dict[str, Any] = {
            "layers_kept": num_layers,
            "heads_kept": num_heads,
            "ffn_kept": 1.0,
            "precision": "fp32",
        }
        if "fusion" in self.dimensions:
            params["fusion"] = False
        return params

    def check_model(self, num_layers: int, num_heads: int) -> None:
        """Raise SpecError unless every choice fits a base model of this shape.

        Dimensions in ``fit_to_model`` are fitted first: choices above the model's count are
        dropped and the count itself is added.
        """
        for name, limit in (("layers_kept", num_layers), ("heads_kept", num_heads)):
            if name in self.fit_to_model:
                kept = {c for c in self.dimensions[name] if c <= limit} | {limit}
                self.dimensions[name] = tuple(sorted(kept))
        base = self.base_params(num_layers, num_heads)
        for name, limit in (("layers_kept", num_layers), ("heads_kept", num_heads)):
            too_big = [c for c in self.dimensions[name] if c > limit]
            if too_big:
                raise SpecError(
                    f"space.dimensions.{name}: choices {too_big} exceed the base model's "
                    f"{limit}; use values from 1 to {limit}"
                )
        for name, value in base.items():
            if value not in self.dimensions[name]:
                raise SpecError(
                    f"space.dimensions.{name}: must include the base model's value {value!r} "
                    f"(trial 0 is the unpruned fp32 base); got {list(self.dimensions[name])}"
                )

    def size(self) -> int:
        n = 1
        for v in self.dimensions.values():
            n *= len(v)
        return n


def _required_dimensions() -> list[str]:
    return [k for k in CandidateConfig.model_fields if k not in _OPTIONAL_DIMENSIONS]


def _sort_key(v: Any) -> tuple[int, Any]:
    return (0, v) if isinstance(v, (int, float)) else (1, str(v))
