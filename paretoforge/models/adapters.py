"""Family adapters: where a model family keeps its layers, attention heads and FFN neurons.

Importance scoring, pruning, distillation and checkpoint I/O are written against this small
interface only; adding a family means adding one adapter in :mod:`paretoforge.models.families`.

Example:
    >>> from paretoforge.models.adapters import ADAPTERS
    >>> ADAPTERS.names()
    ['bert', 'deit', 'distilbert', 'gpt2', 'llama', 'mistral', 'qwen2', 'qwen3', 'roberta', 'vit']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from paretoforge.exceptions import UnknownComponentError
from paretoforge.models.families import (
    ADAPTERS,
    SHAPES_ATTR,
    SOURCE_LAYERS_ATTR,
    BertAdapter,
    DeiTAdapter,
    DistilBertAdapter,
    FamilyAdapter,
    GPT2Adapter,
    RobertaAdapter,
    ViTAdapter,
    in_features,
    layer_shapes,
    out_features,
    slice_projection,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "ADAPTERS",
    "SHAPES_ATTR",
    "SOURCE_LAYERS_ATTR",
    "BertAdapter",
    "DeiTAdapter",
    "DistilBertAdapter",
    "FamilyAdapter",
    "GPT2Adapter",
    "RobertaAdapter",
    "ViTAdapter",
    "adapter_for",
    "in_features",
    "layer_shapes",
    "out_features",
    "slice_projection",
]


def adapter_for(model: nn.Module) -> FamilyAdapter:
    """The adapter of ``model``'s family, chosen by ``model.config.model_type``.

    Raises:
        UnknownComponentError: The model has no config, or its family has no adapter.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type is None:
        raise UnknownComponentError(
            f"Cannot tell the family of {type(model).__name__}: it has no config.model_type. "
            f"Supported model types: {', '.join(ADAPTERS.names())}."
        )
    return ADAPTERS.get(str(model_type))
