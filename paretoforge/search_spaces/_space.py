"""Search spaces: presets (data), and the :class:`SearchSpace` a search asks Optuna through."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from paretoforge.exceptions import SpecError
from paretoforge.registry import Registry
from paretoforge.search_spaces._config import (
    _OPTIONAL_DIMENSIONS,
    INT4_ACCURACY_LEVELS,
    CandidateConfig,
)
from paretoforge.search_spaces._dimensions import DIMENSIONS, Dimension

__all__ = ["PER_LAYER_DIMENSIONS", "SPACES", "SearchSpace", "SpacePreset"]

#: Dimensions a space may choose per layer (one Optuna parameter per layer position).
PER_LAYER_DIMENSIONS: tuple[str, ...] = ("heads_kept", "ffn_kept")
_CONFIG_DIMENSIONS = ("layers_kept", "heads_kept", "ffn_kept", "precision", "fusion",
                      "int4_accuracy_level")
# A valid config that a choice is put into, to check it by the config's own field rules.
_PROBE: dict[str, Any] = {"layers_kept": 1, "heads_kept": 1, "ffn_kept": 1.0,
                          "precision": "fp32"}


class SpacePreset(BaseModel):
    """A named set of dimensions with their choices.

    ``fit_to_model`` dimensions are fitted to the base model (see
    :meth:`SearchSpace.check_model`); ``per_layer`` dimensions are chosen per kept layer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str
    dimensions: dict[str, tuple[Any, ...]]
    fit_to_model: tuple[str, ...] = ()
    per_layer: tuple[str, ...] = ()


SPACES: Registry[SpacePreset] = Registry("search-space preset")

_VIT = {
    "layers_kept": (1, 2, 3, 4),
    "heads_kept": (1, 2, 3, 4),
    "ffn_kept": (0.25, 0.5, 0.75, 1.0),
    "precision": ("fp32", "int8"),
}
_ENCODER = {
    "layers_kept": (1, 2, 3, 4, 6, 8, 12),
    "heads_kept": (2, 3, 4, 6, 8, 12),
    "ffn_kept": (0.25, 0.5, 0.75, 1.0),
    "precision": ("fp32", "int8", "int8-static"),
}
_FIT = ("layers_kept", "heads_kept")
_PER_LAYER = ("heads_kept", "ffn_kept")

SPACES.add("vit-prune", SpacePreset(
    description="Structured pruning of a ViT (layers, heads per layer, FFN width) "
    "x weight precision (fp32, dynamic int8).",
    dimensions=_VIT))
SPACES.add("encoder-prune", SpacePreset(
    description="Structured pruning of any supported encoder checkpoint (BERT, MiniLM, "
    "RoBERTa, DistilBERT): layers, heads per layer, FFN width x precision (fp32, dynamic "
    "int8, static int8). Layer and head choices fit the checkpoint: counts above its own "
    "are dropped and its own count is added.",
    dimensions=_ENCODER, fit_to_model=_FIT))
SPACES.add("decoder-prune", SpacePreset(
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
    fit_to_model=("layers_kept", "heads_kept")))
SPACES.add("vit-per-layer", SpacePreset(
    description="vit-prune with heads and FFN width chosen for each kept layer on its own "
    "(HAT-style): layers x (heads x FFN width) per layer x precision (fp32, dynamic int8).",
    dimensions=_VIT, per_layer=_PER_LAYER))
SPACES.add("encoder-per-layer", SpacePreset(
    description="encoder-prune with heads and FFN width chosen for each kept layer on its "
    "own (HAT-style); layer and head choices fit the checkpoint as in encoder-prune.",
    dimensions=_ENCODER, fit_to_model=_FIT, per_layer=_PER_LAYER))


class SearchSpace:
    """The dimensions of one search, each a tuple of choices.

    Args:
        dimensions: Every dimension of :class:`CandidateConfig` with its choices; the
            optional ones (``fusion``, ``int4_accuracy_level``) may be left out, their
            default then applies. A custom dimension
            (:func:`~paretoforge.search_spaces.register_dimension`) is named with a subset of
            its choices that holds its default.
        fit_to_model: Dimensions (``layers_kept``, ``heads_kept``) whose choices
            :meth:`check_model` fits to the base model instead of rejecting.
        per_layer: Dimensions (``heads_kept``, ``ffn_kept``) chosen for each kept layer:
            :meth:`suggest` asks one parameter per layer position, ``heads_kept_0`` ...
            ``heads_kept_{L-1}`` for the largest ``layers_kept`` L, always all of them (a
            fixed set of parameters, which model-based samplers need), and the candidate
            keeps the first ``layers_kept`` of them.

    Example:
        >>> space = SearchSpace({"layers_kept": (1, 2), "heads_kept": (1, 2),
        ...                      "ffn_kept": (1.0,), "precision": ("fp32",)},
        ...                     per_layer=("heads_kept",))
        >>> list(space.param_choices())
        ['layers_kept', 'heads_kept_0', 'heads_kept_1', 'ffn_kept', 'precision']
        >>> space.size()  # 2 one-layer configs + 4 two-layer ones
        6
    """

    def __init__(self, dimensions: dict[str, tuple[Any, ...]],
                 fit_to_model: tuple[str, ...] = (),
                 per_layer: tuple[str, ...] = ()) -> None:
        fields = set(_CONFIG_DIMENSIONS)
        custom = {k for k in dimensions if k not in fields and k in DIMENSIONS}
        unknown = sorted(set(dimensions) - fields - custom)
        missing = sorted(fields - set(dimensions) - set(_OPTIONAL_DIMENSIONS))
        if unknown or missing:
            extra = f"; custom: {sorted(DIMENSIONS)}" if DIMENSIONS.names() else (
                "; a custom dimension is registered by a module under space.modules")
            raise SpecError(
                f"space.dimensions: unknown {unknown} / missing {missing}; "
                f"the dimensions are {sorted(fields)}{extra}"
            )
        for name, choices in dimensions.items():
            if not choices:
                raise SpecError(f"space.dimensions.{name}: needs at least one choice")
            nested = [c for c in choices if isinstance(c, (list, tuple, dict))]
            if nested:
                raise SpecError(f"space.dimensions.{name}: bad choice {nested[0]!r}: a choice "
                                f"is one value; to choose {name} per layer, add it to "
                                "space.per_layer")
            if len(set(choices)) != len(choices):
                raise SpecError(f"space.dimensions.{name}: {list(choices)} repeats a choice")
            if name in custom:
                _check_custom_choices(DIMENSIONS.get(name), choices)
                continue
            if name == "int4_accuracy_level":
                _check_accuracy_levels(choices, dimensions.get("precision", ()))
                continue
            for c in choices:  # validate every choice through the config's own field rules
                try:
                    CandidateConfig(**{**_PROBE, name: c})
                except Exception as e:
                    msg = str(e).splitlines()[-1].strip()
                    raise SpecError(f"space.dimensions.{name}: bad choice {c!r}: {msg}") from None
        bad = sorted(set(per_layer) - set(PER_LAYER_DIMENSIONS))
        if bad:
            raise SpecError(f"space.per_layer: {bad} cannot be chosen per layer; only "
                            f"{', '.join(PER_LAYER_DIMENSIONS)} can")
        self.dimensions = {k: tuple(sorted(v, key=_sort_key)) if k not in custom else tuple(v)
                           for k, v in dimensions.items()}
        self.custom = tuple(k for k in self.dimensions if k in custom)
        self.fit_to_model = tuple(fit_to_model)
        self.per_layer = tuple(d for d in PER_LAYER_DIMENSIONS if d in per_layer)

    @classmethod
    def from_preset(cls, name: str | None,
                    overrides: dict[str, list[Any]] | None = None, *,
                    per_layer: list[str] | tuple[str, ...] | None = None) -> SearchSpace:
        """The preset ``name`` with ``overrides`` replacing choices; ``name=None``: a space
        declared wholly by ``overrides`` (every dimension, validated the same way).
        ``per_layer`` replaces the preset's per-layer dimensions (None: the preset's).

        Example:
            >>> SearchSpace.from_preset(None, {"layers_kept": [1, 2], "heads_kept": [2],
            ...     "ffn_kept": [0.5, 1.0], "precision": ["fp32"]}).size()
            4
            >>> SearchSpace.from_preset("vit-per-layer").size()
            139808
        """
        if name is None:
            if not overrides:
                raise SpecError(
                    "space: without a preset, space.dimensions must declare every dimension "
                    f"({', '.join(_required_dimensions())}; optionally "
                    f"{', '.join(_OPTIONAL_DIMENSIONS)}), each with a list of choices"
                )
            return cls({k: tuple(v) for k, v in overrides.items()},
                       per_layer=tuple(per_layer or ()))
        preset = SPACES.get(name)
        dims = dict(preset.dimensions)
        for k, v in (overrides or {}).items():
            if k not in dims and k not in _OPTIONAL_DIMENSIONS and k not in DIMENSIONS:
                raise SpecError(
                    f"space.dimensions: unknown dimension {k!r} for preset {name!r}; "
                    f"its dimensions are {sorted(dims)}"
                    + (f"; custom: {sorted(DIMENSIONS)}" if DIMENSIONS.names() else "")
                )
            dims[k] = tuple(v)
        fit = tuple(d for d in preset.fit_to_model if d not in (overrides or {}))
        layered = preset.per_layer if per_layer is None else tuple(per_layer)
        return cls(dims, fit_to_model=fit, per_layer=layered)

    # -- what Optuna is asked --------------------------------------------------------------

    def max_layers(self) -> int:
        return max(self.dimensions["layers_kept"])

    def param_choices(self) -> dict[str, tuple[Any, ...]]:
        """Every Optuna parameter :meth:`suggest` asks, with its choices, in asking order."""
        out: dict[str, tuple[Any, ...]] = {}
        for name, choices in self.dimensions.items():
            if name in self.per_layer:
                for i in range(self.max_layers()):
                    out[f"{name}_{i}"] = choices
            else:
                out[name] = choices
        return out

    def suggest(self, trial: Any) -> CandidateConfig:
        """Ask ``trial`` for one value per parameter (called once per trial, by the driver);
        the same parameters always give the same config."""
        params = {k: trial.suggest_categorical(k, list(v))
                  for k, v in self.param_choices().items()}
        return self.config_from_params(params)

    def config_from_params(self, params: dict[str, Any]) -> CandidateConfig:
        """The canonical config of a trial's parameters (those :meth:`param_choices` names).

        Example:
            >>> space = SearchSpace.from_preset("vit-per-layer")
            >>> base = space.base_params(4, 4)
            >>> space.config_from_params(base).is_unpruned(4, 4)
            True
        """
        layers = int(params["layers_kept"])
        values: dict[str, Any] = {}
        custom: dict[str, Any] = {}
        for name in self.dimensions:
            if name in self.per_layer:
                values[name] = tuple(params[f"{name}_{i}"] for i in range(layers))
            elif name in self.custom:
                if params[name] != DIMENSIONS.get(name).default:
                    custom[name] = params[name]
            else:
                values[name] = params[name]
        return CandidateConfig(**values, custom=custom)

    def base_params(self, num_layers: int, num_heads: int) -> dict[str, Any]:
        """Params of the unpruned fp32 base model (unfused, every custom dimension at its
        default), enqueued as trial 0."""
        base: dict[str, Any] = {
            "layers_kept": num_layers,
            "heads_kept": num_heads,
            "ffn_kept": 1.0,
            "precision": "fp32",
        }
        if "fusion" in self.dimensions:
            base["fusion"] = False
        if "int4_accuracy_level" in self.dimensions:  # the fp32 base holds 0 whatever is asked
            base["int4_accuracy_level"] = self.dimensions["int4_accuracy_level"][0]
        for name in self.custom:
            base[name] = DIMENSIONS.get(name).default
        params: dict[str, Any] = {}
        for name, value in base.items():
            if name in self.per_layer:
                for i in range(max(self.max_layers(), num_layers)):
                    params[f"{name}_{i}"] = value
            else:
                params[name] = value
        return params

    def custom_dimensions(self) -> tuple[Dimension, ...]:
        """The custom dimensions this space searches (what the driver ships to workers)."""
        return tuple(DIMENSIONS.get(n) for n in self.custom)

    def check_model(self, num_layers: int, num_heads: int) -> None:
        """Raise SpecError unless every choice fits a base model of this shape.

        Dimensions in ``fit_to_model`` are fitted first: choices above the model's count are
        dropped and the count itself is added.
        """
        for name, limit in (("layers_kept", num_layers), ("heads_kept", num_heads)):
            if name in self.fit_to_model:
                kept = {c for c in self.dimensions[name] if c <= limit} | {limit}
                self.dimensions[name] = tuple(sorted(kept))
        for name, limit in (("layers_kept", num_layers), ("heads_kept", num_heads)):
            too_big = [c for c in self.dimensions[name] if c > limit]
            if too_big:
                raise SpecError(
                    f"space.dimensions.{name}: choices {too_big} exceed the base model's "
                    f"{limit}; use values from 1 to {limit}"
                )
        base = self.base_params(num_layers, num_heads)
        for name, value in base.items():
            dim = name.rsplit("_", 1)[0] if name not in self.dimensions else name
            if value not in self.dimensions[dim]:
                raise SpecError(
                    f"space.dimensions.{dim}: must include the base model's value {value!r} "
                    f"(trial 0 is the unpruned fp32 base); got {list(self.dimensions[dim])}"
                )

    def size(self) -> int:
        """The number of distinct configs of the space.

        A per-layer dimension with c choices gives c**L configs of L kept layers.
        """
        uniform = 1
        for name, v in self.dimensions.items():
            if name != "layers_kept" and name not in self.per_layer:
                uniform *= len(v)
        total = 0
        for layers in self.dimensions["layers_kept"]:
            n = 1
            for name in self.per_layer:
                n *= len(self.dimensions[name]) ** int(layers)
            total += n
        return total * uniform


def _check_custom_choices(dim: Dimension, choices: tuple[Any, ...]) -> None:
    for c in choices:
        if c not in dim.choices or type(c) is not type(dim.choices[dim.choices.index(c)]):
            raise SpecError(f"space.dimensions.{dim.name}: bad choice {c!r}: not one of the "
                            f"dimension's choices {list(dim.choices)}")
    if dim.default not in choices:
        raise SpecError(f"space.dimensions.{dim.name}: must include the dimension's default "
                        f"{dim.default!r} (trial 0 is the unchanged base); got {list(choices)}")


def _check_accuracy_levels(choices: tuple[Any, ...], precisions: tuple[Any, ...]) -> None:
    bad = [c for c in choices if isinstance(c, bool) or c not in INT4_ACCURACY_LEVELS]
    if bad:
        raise SpecError(
            f"space.dimensions.int4_accuracy_level: bad choice {bad[0]!r}; MatMulNBits "
            f"accuracy levels are {list(INT4_ACCURACY_LEVELS)} (0 unset = fp32 on CPU, 1 fp32, "
            "2 fp16, 3 bf16, 4 int8); use some of those")
    if len(choices) > 1 and "int4" not in precisions:
        raise SpecError(
            f"space.dimensions.int4_accuracy_level: {list(choices)} is searched but "
            f"space.dimensions.precision {list(precisions)} has no 'int4', where alone the "
            "level acts; add 'int4' to the precisions or drop int4_accuracy_level")


def _required_dimensions() -> list[str]:
    return [k for k in _CONFIG_DIMENSIONS if k not in _OPTIONAL_DIMENSIONS]


def _sort_key(v: Any) -> tuple[int, Any]:
    return (0, v) if isinstance(v, (int, float)) else (1, str(v))
