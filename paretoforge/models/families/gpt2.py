"""GPT-2: ``h[i]`` with a fused ``attn.c_attn`` (q | k | v) and ``mlp.c_{fc,proj}``, all Conv1D.

Conv1D stores its weight as ``(in, out)``; the fused projection's output is three head-major
blocks (``head_sections = 3``), so pruning heads slices the same heads out of each block.
transformers 5's ``GPT2Attention`` views by ``head_dim`` but splits the fused output by its
cached ``split_size``, which must become ``num_heads * head_dim``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from torch import nn

from paretoforge.exceptions import BuildError
from paretoforge.models.families._base import FamilyAdapter

__all__ = ["GPT2Adapter"]


class GPT2Adapter(FamilyAdapter):
    """``GPT2Model``, ``GPT2LMHeadModel`` and the classification heads (no cross-attention)."""

    config_class = "GPT2Config"
    architectures = (
        "GPT2Model",
        "GPT2LMHeadModel",
        "GPT2ForSequenceClassification",
        "GPT2ForTokenClassification",
        "GPT2ForQuestionAnswering",
    )
    head_sections = 3
    causal = True
    tiny_config_args: ClassVar[Mapping[str, Any]] = {
        "n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 64, "vocab_size": 99,
        "n_positions": 40, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0,
        "use_cache": False,
    }  # fmt: skip

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.base_model.h

    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        model.base_model.h = layers

    def head_projections(self, layer: nn.Module) -> tuple[nn.Module, ...]:
        return (layer.attn.c_attn,)

    def out_projection(self, layer: nn.Module) -> nn.Module:
        return layer.attn.c_proj

    def ffn(self, layer: nn.Module) -> tuple[nn.Module, nn.Module]:
        return layer.mlp.c_fc, layer.mlp.c_proj

    def head_dim(self, model: nn.Module) -> int:
        return int(self.layers(model)[0].attn.head_dim)

    def sync_layer(self, layer: nn.Module, index: int, num_heads: int, head_dim: int) -> None:
        super().sync_layer(layer, index, num_heads, head_dim)
        layer.attn.num_heads = num_heads
        layer.attn.split_size = num_heads * head_dim  # c_attn output is (B, T, 3 * nh * hd)

    def check_supported(self, config: Any) -> None:
        if getattr(config, "add_cross_attention", False):
            raise BuildError(
                "GPT-2 with add_cross_attention=True is not supported: its cross-attention "
                "heads are not pruned. Use a decoder-only GPT-2 checkpoint."
            )

    def check_layers_kept(self, model: nn.Module, kept: Sequence[int]) -> None:
        # With scale_attn_by_inverse_layer_idx the attention scale is 1 / (layer_idx + 1),
        # fixed at construction: a layer that moves would change scale when reloaded.
        if getattr(model.config, "scale_attn_by_inverse_layer_idx", False) and list(kept) != list(
            range(len(kept))
        ):
            raise BuildError(
                f"GPT-2 with scale_attn_by_inverse_layer_idx=True can only drop trailing layers "
                f"(its attention scale depends on the layer's position); got layers {list(kept)}."
            )
