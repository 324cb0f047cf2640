"""DistilBERT: ``transformer.layer[i]`` with ``attention.{q,k,v,out}_lin`` and ``ffn.lin{1,2}``.

transformers 5's ``DistilBertSelfAttention`` views by ``attention_head_size``; ``n_heads`` is
cached and reset here, as is ``Transformer.n_layers``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn

from paretoforge.models.families._base import FamilyAdapter

__all__ = ["DistilBertAdapter"]


class DistilBertAdapter(FamilyAdapter):
    """``DistilBertModel`` and its task heads."""

    config_class = "DistilBertConfig"
    architectures = (
        "DistilBertModel",
        "DistilBertForSequenceClassification",
        "DistilBertForMaskedLM",
        "DistilBertForTokenClassification",
        "DistilBertForQuestionAnswering",
        "DistilBertForMultipleChoice",
    )
    tiny_config_args: ClassVar[Mapping[str, Any]] = {
        "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64, "vocab_size": 99,
        "max_position_embeddings": 40,
    }  # fmt: skip

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.base_model.transformer.layer

    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        model.base_model.transformer.layer = layers

    def head_projections(self, layer: nn.Module) -> tuple[nn.Module, ...]:
        a = layer.attention
        return a.q_lin, a.k_lin, a.v_lin

    def out_projection(self, layer: nn.Module) -> nn.Module:
        return layer.attention.out_lin

    def ffn(self, layer: nn.Module) -> tuple[nn.Module, nn.Module]:
        return layer.ffn.lin1, layer.ffn.lin2

    def head_dim(self, model: nn.Module) -> int:
        return int(self.layers(model)[0].attention.attention_head_size)

    def sync_layer(self, layer: nn.Module, index: int, num_heads: int, head_dim: int) -> None:
        super().sync_layer(layer, index, num_heads, head_dim)
        layer.attention.n_heads = num_heads

    def sync_model(self, model: nn.Module) -> None:
        model.base_model.transformer.n_layers = len(self.layers(model))
