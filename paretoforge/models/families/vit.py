"""Vision transformers: ViT and DeiT (transformers >= 5 layout: ``layers[i].attention.q_proj``).

transformers 5 views q/k/v by ``head_dim``; ``num_attention_heads`` is cached and reset here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn

from paretoforge.exceptions import BuildError
from paretoforge.models.families._base import FamilyAdapter

__all__ = ["DeiTAdapter", "ViTAdapter"]


class ViTAdapter(FamilyAdapter):
    """Hugging Face ``ViTForImageClassification`` / ``ViTModel`` (transformers >= 5)."""

    config_class = "ViTConfig"
    architectures = ("ViTForImageClassification", "ViTModel", "ViTForMaskedImageModeling")
    input_names = ("pixel_values",)
    tiny_config_args: ClassVar[Mapping[str, Any]] = {
        "image_size": 8, "patch_size": 2, "num_channels": 1, "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
        "num_labels": 10,
    }  # fmt: skip

    def layers(self, model: nn.Module) -> nn.ModuleList:
        layers = getattr(model.base_model, "layers", None)
        if layers is None:
            # transformers 4.x kept them in vit.encoder.layer, with a head count that does not
            # follow the projection shapes; this adapter does not slice that layout.
            raise BuildError(
                f"{type(model).__name__} has no base_model.layers: the {type(self).__name__} "
                "needs the transformers >= 5 layout. Upgrade transformers."
            )
        return layers

    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        model.base_model.layers = layers

    def head_projections(self, layer: nn.Module) -> tuple[nn.Module, ...]:
        a = layer.attention
        return a.q_proj, a.k_proj, a.v_proj

    def out_projection(self, layer: nn.Module) -> nn.Module:
        return layer.attention.o_proj

    def ffn(self, layer: nn.Module) -> tuple[nn.Module, nn.Module]:
        return layer.mlp.fc1, layer.mlp.fc2

    def head_dim(self, model: nn.Module) -> int:
        return int(self.layers(model)[0].attention.head_dim)

    def sync_layer(self, layer: nn.Module, index: int, num_heads: int, head_dim: int) -> None:
        super().sync_layer(layer, index, num_heads, head_dim)
        layer.attention.num_attention_heads = num_heads


class DeiTAdapter(ViTAdapter):
    """Hugging Face DeiT (same layer layout as ViT, plus a distillation token)."""

    config_class = "DeiTConfig"
    architectures = (
        "DeiTForImageClassification",
        "DeiTForImageClassificationWithTeacher",
        "DeiTModel",
        "DeiTForMaskedImageModeling",
    )
