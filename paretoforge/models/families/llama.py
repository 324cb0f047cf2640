"""Llama-style decoders: RMSNorm, rotary embeddings, a SwiGLU MLP, grouped-query attention.

``model.layers[i]`` holds ``self_attn.{q,k,v,o}_proj`` and ``mlp.{gate,up,down}_proj``, all
``nn.Linear``. With grouped-query attention (GQA) ``num_key_value_heads`` key/value heads each
serve ``q_per_kv = num_attention_heads // num_key_value_heads`` consecutive query heads
(transformers' ``repeat_kv``: kv head ``j`` serves query heads ``j*q_per_kv .. +q_per_kv-1``).
The prunable unit is one such *group*: its query heads in q and o, and its head in k and v
(:meth:`~paretoforge.models.families.FamilyAdapter.unit_heads`), so a pruned model keeps
``q_per_kv`` and is still valid GQA; with ``num_key_value_heads == num_attention_heads`` a
group is one head. FFN neurons go from gate, up and down together. The attention views by
``head_dim`` and derives head counts from the projection shapes, so slicing is all pruning takes.

When every layer keeps the same shape, the config's ``num_attention_heads``,
``num_key_value_heads``, ``intermediate_size`` and ``head_dim`` are set to it, so that
``transformers.AutoModelForCausalLM.from_pretrained`` loads the pruned checkpoint as it is.

The same adapter serves Qwen2 (q/k/v biases), Qwen3 (per-head q/k RMSNorm) and Mistral.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn

from paretoforge.exceptions import BuildError
from paretoforge.models.families._base import (
    SOURCE_LAYERS_ATTR,
    FamilyAdapter,
    layer_shapes,
    out_features,
)

__all__ = ["LlamaAdapter", "MistralAdapter", "Qwen2Adapter", "Qwen3Adapter"]


class LlamaAdapter(FamilyAdapter):
    """``LlamaForCausalLM`` / ``LlamaModel``; a head unit is one key/value group."""

    config_class = "LlamaConfig"
    architectures: tuple[str, ...] = ("LlamaForCausalLM", "LlamaModel")
    causal = True
    tiny_config_args: ClassVar[Mapping[str, Any]] = {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 64, "vocab_size": 99,
        "max_position_embeddings": 64, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 0, "tie_word_embeddings": False, "use_cache": False,
    }  # fmt: skip

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.base_model.layers

    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        model.base_model.layers = layers

    def head_projections(self, layer: nn.Module) -> tuple[nn.Module, ...]:
        a = layer.self_attn
        return a.q_proj, a.k_proj, a.v_proj

    def out_projection(self, layer: nn.Module) -> nn.Module:
        return layer.self_attn.o_proj

    def ffn(self, layer: nn.Module) -> tuple[nn.Module, nn.Module]:
        return layer.mlp.up_proj, layer.mlp.down_proj

    def ffn_inputs(self, layer: nn.Module) -> tuple[nn.Module, ...]:
        return layer.mlp.gate_proj, layer.mlp.up_proj

    def head_dim(self, model: nn.Module) -> int:
        return int(self.layers(model)[0].self_attn.head_dim)

    def num_heads(self, layer: nn.Module, head_dim: int) -> int:
        """Key/value groups a layer has now (its prunable head units)."""
        return out_features(layer.self_attn.k_proj) // head_dim

    def unit_heads(self, layer: nn.Module, head_dim: int) -> tuple[int, ...]:
        a = layer.self_attn
        return out_features(a.q_proj) // out_features(a.k_proj), 1, 1

    def sync_model(self, model: nn.Module) -> None:
        shapes = layer_shapes(model, self)
        layer = self.layers(model)[0]
        hd = self.head_dim(model)
        q_per_kv = self.unit_heads(layer, hd)[0]
        config = model.config
        config.head_dim = hd  # explicit: hidden_size / num_attention_heads no longer gives it
        if len(set(shapes["heads"])) == 1 and len(set(shapes["intermediate"])) == 1:
            config.num_key_value_heads = shapes["heads"][0]
            config.num_attention_heads = shapes["heads"][0] * q_per_kv
            config.intermediate_size = shapes["intermediate"][0]
        # Qwen2 / Mistral-style configs list one attention type per layer: keep the kept ones.
        types = getattr(config, "layer_types", None)
        n = len(self.layers(model))
        if isinstance(types, list) and types and len(types) != n:
            source = getattr(config, SOURCE_LAYERS_ATTR, None)
            if len(set(types)) == 1:
                config.layer_types = [types[0]] * n
            elif isinstance(source, list) and len(source) == n and max(source) < len(types):
                config.layer_types = [types[i] for i in source]
            else:
                raise BuildError(f"{config.model_type}: cannot tell which of layer_types "
                                 f"{types} the {n} kept layers have.")

    def check_supported(self, config: Any) -> None:
        heads, kv = config.num_attention_heads, config.num_key_value_heads or \
            config.num_attention_heads
        if heads % kv:
            raise BuildError(
                f"{config.model_type}: num_attention_heads={heads} is not a multiple of "
                f"num_key_value_heads={kv}; such a checkpoint is not grouped-query attention.")


class MistralAdapter(LlamaAdapter):
    """``MistralForCausalLM``: Llama's layout (sliding-window attention is shape-free)."""

    config_class = "MistralConfig"
    architectures = ("MistralForCausalLM", "MistralModel")


class Qwen2Adapter(LlamaAdapter):
    """``Qwen2ForCausalLM``: Llama's layout with q/k/v biases (sliced with their heads)."""

    config_class = "Qwen2Config"
    architectures = ("Qwen2ForCausalLM", "Qwen2Model")


class Qwen3Adapter(LlamaAdapter):
    """``Qwen3ForCausalLM``: Llama's layout with a per-head RMSNorm on q and k (its weight is
    per head-dimension, shared by the heads, so pruning leaves it)."""

    config_class = "Qwen3Config"
    architectures = ("Qwen3ForCausalLM", "Qwen3Model")
