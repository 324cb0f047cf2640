"""BERT-architecture encoders: BERT, RoBERTa, and MiniLM checkpoints (``model_type`` ``bert``).

transformers 5 derives the head count of ``BertSelfAttention`` from the projection shapes
(``view(*input_shape, -1, attention_head_size)``); ``num_attention_heads`` and
``all_head_size`` are only cached, and are reset here after surgery. ``config.pruned_heads`` and
``prune_heads`` no longer exist in transformers 5.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn

from paretoforge.models.families._base import FamilyAdapter

__all__ = ["BertAdapter", "RobertaAdapter"]

_HEADS = (
    "Model",
    "ForSequenceClassification",
    "ForMaskedLM",
    "ForTokenClassification",
    "ForQuestionAnswering",
    "ForMultipleChoice",
)


class BertAdapter(FamilyAdapter):
    """``BertModel`` and its task heads; MiniLM checkpoints (e.g. all-MiniLM-L6-v2) are BERT."""

    config_class = "BertConfig"
    architectures = tuple(f"Bert{h}" for h in _HEADS) + ("BertForPreTraining", "BertLMHeadModel")
    tiny_config_args: ClassVar[Mapping[str, Any]] = {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "vocab_size": 99, "max_position_embeddings": 40,
    }  # fmt: skip

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.base_model.encoder.layer

    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        model.base_model.encoder.layer = layers

    def head_projections(self, layer: nn.Module) -> tuple[nn.Module, ...]:
        a = layer.attention.self
        return a.query, a.key, a.value

    def out_projection(self, layer: nn.Module) -> nn.Module:
        return layer.attention.output.dense

    def ffn(self, layer: nn.Module) -> tuple[nn.Module, nn.Module]:
        return layer.intermediate.dense, layer.output.dense

    def head_dim(self, model: nn.Module) -> int:
        return int(self.layers(model)[0].attention.self.attention_head_size)

    def sync_layer(self, layer: nn.Module, index: int, num_heads: int, head_dim: int) -> None:
        super().sync_layer(layer, index, num_heads, head_dim)
        a = layer.attention.self
        a.num_attention_heads = num_heads
        a.all_head_size = num_heads * head_dim


class RobertaAdapter(BertAdapter):
    """``RobertaModel`` and its task heads (same layer layout as BERT)."""

    config_class = "RobertaConfig"
    architectures = tuple(f"Roberta{h}" for h in _HEADS) + ("RobertaForCausalLM",)
    tiny_config_args: ClassVar[Mapping[str, Any]] = {
        **BertAdapter.tiny_config_args, "pad_token_id": 1,  # positions start after padding_idx
    }
