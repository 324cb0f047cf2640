"""Family adapters: where a model family keeps its layers, attention heads and FFN neurons.

Importance scoring, pruning, distillation and checkpoint I/O are written against this small
interface only; adding a family (BERT, GPT-2, ...) means adding one adapter, nothing else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from paretoforge.exceptions import BuildError, UnknownComponentError
from paretoforge.registry import Registry

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ADAPTERS", "FamilyAdapter", "ViTAdapter", "adapter_for", "layer_shapes"]

SHAPES_ATTR = "paretoforge_shapes"


class FamilyAdapter(ABC):
    """How paretoforge finds the prunable parts of one model family.

    The attention of a layer is four Linear modules: ``q``, ``k``, ``v`` project the hidden state
    to ``num_heads * head_dim`` features, grouped head by head (head ``h`` owns features
    ``h*head_dim : (h+1)*head_dim``), and ``o`` projects them back. The model must derive its
    head count from the projection shapes at run time (view by ``head_dim``), so that slicing
    those Linear modules is all that pruning heads takes. The FFN is ``up`` then ``down``.

    Subclasses are stateless; register them with ``@ADAPTERS.register(model_type)``.

    Example:
        >>> from paretoforge.models.adapters import adapter_for
        >>> adapter = adapter_for(model)  # doctest: +SKIP
        >>> [adapter.num_heads(layer) for layer in adapter.layers(model)]  # doctest: +SKIP
        [4, 4]
    """

    #: Name in ``transformers`` of the family's config class (used instead of AutoConfig).
    config_class: str = ""
    #: Model classes this adapter can rebuild from a config (names in ``transformers``).
    architectures: tuple[str, ...] = ()

    @abstractmethod
    def layers(self, model: nn.Module) -> nn.ModuleList:
        """The model's transformer layers, in order."""

    @abstractmethod
    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        """Replace the model's transformer layers (called by layer pruning)."""

    @abstractmethod
    def attention(self, layer: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear, nn.Linear]:
        """The ``(q, k, v, o)`` Linear modules of a layer's self-attention."""

    @abstractmethod
    def ffn(self, layer: nn.Module) -> tuple[nn.Linear, nn.Linear]:
        """The ``(up, down)`` Linear modules of a layer's feed-forward block."""

    @abstractmethod
    def head_dim(self, model: nn.Module) -> int:
        """Features per attention head (the same in every layer, pruning keeps it)."""

    def num_heads(self, layer: nn.Module, head_dim: int) -> int:
        """Heads a layer has now, read from its ``q`` projection."""
        return self.attention(layer)[0].out_features // head_dim

    def set_layer_shapes(self, model: nn.Module) -> None:
        """Make config and module attributes agree with the (possibly pruned) module shapes.

        Records ``config.paretoforge_shapes = {"heads": [...], "intermediate": [...]}`` so that
        ``config.json`` carries what :func:`paretoforge.models.io.load_pretrained` must rebuild.
        """
        layers = self.layers(model)
        model.config.num_hidden_layers = len(layers)
        setattr(model.config, SHAPES_ATTR, layer_shapes(model, self))

    def build(self, config: Any) -> nn.Module:
        """A randomly initialised model of the config's architecture (before loading weights)."""
        import transformers

        archs = list(getattr(config, "architectures", None) or self.architectures[:1])
        name = archs[0]
        if name not in self.architectures:
            raise BuildError(
                f"Architecture {name!r} is not supported for model_type "
                f"{config.model_type!r}. Supported: {', '.join(self.architectures)}."
            )
        return getattr(transformers, name)(config)


ADAPTERS: Registry[FamilyAdapter] = Registry("model family")


def layer_shapes(model: nn.Module, adapter: FamilyAdapter) -> dict[str, list[int]]:
    """Per-layer head counts and FFN widths of ``model`` as a JSON-able dict."""
    hd = adapter.head_dim(model)
    layers = adapter.layers(model)
    return {
        "heads": [adapter.num_heads(layer, hd) for layer in layers],
        "intermediate": [adapter.ffn(layer)[0].out_features for layer in layers],
    }


class ViTAdapter(FamilyAdapter):
    """Hugging Face ``ViTForImageClassification`` / ``ViTModel`` (transformers >= 5)."""

    config_class = "ViTConfig"
    architectures = ("ViTForImageClassification", "ViTModel")

    def _backbone(self, model: nn.Module) -> nn.Module:
        return getattr(model, "vit", model)

    def layers(self, model: nn.Module) -> nn.ModuleList:
        layers = getattr(self._backbone(model), "layers", None)
        if layers is None:
            # transformers 4.x kept them in vit.encoder.layer, with a head count that does not
            # follow the projection shapes; this adapter does not slice that layout.
            raise BuildError(
                f"{type(model).__name__} has no vit.layers: the ViT adapter needs the "
                "transformers >= 5 ViT layout. Upgrade transformers."
            )
        return layers

    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        self._backbone(model).layers = layers

    def attention(self, layer: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear, nn.Linear]:
        a = layer.attention
        return a.q_proj, a.k_proj, a.v_proj, a.o_proj

    def ffn(self, layer: nn.Module) -> tuple[nn.Linear, nn.Linear]:
        return layer.mlp.fc1, layer.mlp.fc2

    def head_dim(self, model: nn.Module) -> int:
        return int(self.layers(model)[0].attention.head_dim)

    def set_layer_shapes(self, model: nn.Module) -> None:
        hd = self.head_dim(model)
        for layer in self.layers(model):
            layer.attention.num_attention_heads = self.num_heads(layer, hd)
        super().set_layer_shapes(model)


ADAPTERS.add("vit", ViTAdapter())


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
