"""Per-family adapters, registered by ``config.model_type``.

========== ============================ ==============================================
model_type adapter                      checkpoints
========== ============================ ==============================================
bert       :class:`BertAdapter`         BERT, MiniLM (e.g. all-MiniLM-L6-v2)
roberta    :class:`RobertaAdapter`      RoBERTa
distilbert :class:`DistilBertAdapter`   DistilBERT
gpt2       :class:`GPT2Adapter`         GPT-2 (fused Conv1D qkv)
llama      :class:`LlamaAdapter`        Llama-style decoders (GQA: a head unit is a KV group)
mistral    :class:`MistralAdapter`      Mistral
qwen2      :class:`Qwen2Adapter`        Qwen2 / Qwen2.5
qwen3      :class:`Qwen3Adapter`        Qwen3
vit        :class:`ViTAdapter`          ViT
deit       :class:`DeiTAdapter`         DeiT
========== ============================ ==============================================
"""

from __future__ import annotations

from paretoforge.models.families._base import (
    ADAPTERS,
    SHAPES_ATTR,
    SOURCE_LAYERS_ATTR,
    FamilyAdapter,
    in_features,
    layer_shapes,
    out_features,
    slice_projection,
)
from paretoforge.models.families.bert import BertAdapter, RobertaAdapter
from paretoforge.models.families.distilbert import DistilBertAdapter
from paretoforge.models.families.gpt2 import GPT2Adapter
from paretoforge.models.families.llama import (
    LlamaAdapter,
    MistralAdapter,
    Qwen2Adapter,
    Qwen3Adapter,
)
from paretoforge.models.families.vit import DeiTAdapter, ViTAdapter

for _name, _adapter in (
    ("bert", BertAdapter()),
    ("roberta", RobertaAdapter()),
    ("distilbert", DistilBertAdapter()),
    ("gpt2", GPT2Adapter()),
    ("llama", LlamaAdapter()),
    ("mistral", MistralAdapter()),
    ("qwen2", Qwen2Adapter()),
    ("qwen3", Qwen3Adapter()),
    ("vit", ViTAdapter()),
    ("deit", DeiTAdapter()),
):
    if _name not in ADAPTERS:  # re-import (e.g. importlib.reload) must not raise
        ADAPTERS.add(_name, _adapter)

__all__ = [
    "ADAPTERS",
    "SHAPES_ATTR",
    "SOURCE_LAYERS_ATTR",
    "BertAdapter",
    "DeiTAdapter",
    "DistilBertAdapter",
    "FamilyAdapter",
    "GPT2Adapter",
    "LlamaAdapter",
    "MistralAdapter",
    "Qwen2Adapter",
    "Qwen3Adapter",
    "RobertaAdapter",
    "ViTAdapter",
    "in_features",
    "layer_shapes",
    "out_features",
    "slice_projection",
]
