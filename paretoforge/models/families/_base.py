"""The family adapter interface and the weight-layout helpers every adapter shares.

An adapter says *where* a family keeps its prunable parts; the algorithms (importance, surgery,
distillation, checkpoint I/O) are written once against this interface.

Two weight layouts occur: ``nn.Linear`` stores ``(out, in)`` and computes ``x @ W.T + b``;
GPT-2's ``Conv1D`` stores ``(in, out)`` and computes ``x @ W + b``. :func:`out_features`,
:func:`in_features` and :func:`slice_projection` hide the difference.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from paretoforge.exceptions import BuildError
from paretoforge.registry import Registry

__all__ = [
    "ADAPTERS",
    "SHAPES_ATTR",
    "SOURCE_LAYERS_ATTR",
    "FamilyAdapter",
    "in_features",
    "layer_shapes",
    "out_features",
    "slice_projection",
]

#: Config attribute holding per-layer head counts and FFN widths of a pruned model.
SHAPES_ATTR = "paretoforge_shapes"
#: Config attribute holding, for each layer of a pruned model, its index in the original model.
SOURCE_LAYERS_ATTR = "paretoforge_source_layers"


def _is_conv1d(module: nn.Module) -> bool:
    # transformers.pytorch_utils.Conv1D, matched by name so that this module need not import
    # transformers; it is the only (in, out)-layout projection the adapters return.
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def out_features(module: nn.Module) -> int:
    """Output features of a projection (``nn.Linear`` or GPT-2 ``Conv1D``)."""
    return int(module.nf) if _is_conv1d(module) else int(module.out_features)


def in_features(module: nn.Module) -> int:
    """Input features of a projection (``nn.Linear`` or GPT-2 ``Conv1D``)."""
    return int(module.weight.shape[0]) if _is_conv1d(module) else int(module.in_features)


@torch.no_grad()
def slice_projection(
    module: nn.Module,
    out_idx: torch.Tensor | Sequence[int] | None = None,
    in_idx: torch.Tensor | Sequence[int] | None = None,
) -> None:
    """Keep only outputs ``out_idx`` and inputs ``in_idx`` of a projection, in place.

    The module object stays (references to it stay valid); its parameters are replaced by
    sliced copies. The bias follows the outputs; an input slice leaves it unchanged.

    Raises:
        BuildError: ``module`` is neither ``nn.Linear`` nor ``Conv1D``.
    """
    conv = _is_conv1d(module)
    if not conv and not isinstance(module, nn.Linear):
        raise BuildError(
            f"Cannot slice a {type(module).__name__}: only nn.Linear and transformers Conv1D "
            "projections can be pruned."
        )
    out_dim, in_dim = (1, 0) if conv else (0, 1)  # weight axes of outputs and inputs
    weight = module.weight
    if out_idx is not None:
        out_idx = torch.as_tensor(out_idx, dtype=torch.long)
        weight = weight.index_select(out_dim, out_idx)
        if module.bias is not None:
            module.bias = nn.Parameter(module.bias[out_idx].clone())
        if conv:
            module.nf = len(out_idx)
        else:
            module.out_features = len(out_idx)
    if in_idx is not None:
        in_idx = torch.as_tensor(in_idx, dtype=torch.long)
        weight = weight.index_select(in_dim, in_idx)
        if conv:
            module.nx = len(in_idx)
        else:
            module.in_features = len(in_idx)
    module.weight = nn.Parameter(weight.contiguous().clone())


class FamilyAdapter(ABC):
    """How paretoforge finds the prunable parts of one model family.

    Attention: the *head projections* (q, k, v; or one fused qkv) map the hidden state to
    features grouped head by head: in each of :attr:`head_sections` consecutive blocks of
    ``num_heads * head_dim`` features, head ``h`` owns ``h*head_dim : (h+1)*head_dim``. The
    *output projection* maps ``num_heads * head_dim`` features back. The FFN is ``up`` then
    ``down``. The model must derive its head count at run time from the projection shapes (a
    ``view(..., -1, head_dim)``); what it caches from the config is reset in
    :meth:`sync_layer`, so that slicing projections is all that pruning takes.

    Subclasses are stateless; register them with ``ADAPTERS.add(model_type, adapter)``.

    Example:
        >>> from paretoforge.models.adapters import adapter_for
        >>> adapter = adapter_for(model)  # doctest: +SKIP
        >>> hd = adapter.head_dim(model)  # doctest: +SKIP
        >>> [adapter.num_heads(layer, hd) for layer in adapter.layers(model)]  # doctest: +SKIP
        [4, 4]
    """

    #: Name in ``transformers`` of the family's config class (used instead of AutoConfig).
    config_class: str = ""
    #: Model classes this adapter can rebuild from a config (names in ``transformers``).
    architectures: tuple[str, ...] = ()
    #: ONNX / forward input names of the family, in export order.
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")
    #: Head-major blocks in each head projection's output: 1 for separate q/k/v, 3 for fused.
    head_sections: int = 1
    #: Whether the model is a causal (decoder-only) language model.
    causal: bool = False
    #: Arguments of :attr:`config_class` for a tiny random model of the family (2 layers,
    #: hidden 32, 4 heads, FFN 64): what :meth:`tiny_config` builds and the contract suite
    #: (:mod:`paretoforge.testing.contracts`) prunes, exports and reloads. Every family fills it.
    tiny_config_args: ClassVar[Mapping[str, Any]] = {}

    # -- where things live ----------------------------------------------------------------

    @abstractmethod
    def layers(self, model: nn.Module) -> nn.ModuleList:
        """The model's transformer layers, in order."""

    @abstractmethod
    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        """Replace the model's transformer layers (called by layer pruning)."""

    @abstractmethod
    def head_projections(self, layer: nn.Module) -> tuple[nn.Module, ...]:
        """Projections whose outputs are grouped head by head (q, k, v; or fused qkv)."""

    @abstractmethod
    def out_projection(self, layer: nn.Module) -> nn.Module:
        """The attention output projection, whose inputs are grouped head by head."""

    @abstractmethod
    def ffn(self, layer: nn.Module) -> tuple[nn.Module, nn.Module]:
        """The ``(up, down)`` projections of a layer's feed-forward block."""

    @abstractmethod
    def head_dim(self, model: nn.Module) -> int:
        """Features per attention head (the same in every layer; pruning keeps it)."""

    def unit_heads(self, layer: nn.Module, head_dim: int) -> tuple[int, ...]:
        """For each of :meth:`head_projections`, the attention heads of one prunable *unit*.

        A unit is what :meth:`num_heads` counts and pruning keeps or drops: one head (the
        default, ``(1, 1, 1)``), or, for grouped-query attention, one key/value group: its
        query heads in q and its one head in k and v (``(q_per_kv, 1, 1)``). The first
        projection's count is also the unit's share of the output projection's inputs.
        """
        return (1,) * len(self.head_projections(layer))

    def ffn_inputs(self, layer: nn.Module) -> tuple[nn.Module, ...]:
        """Projections whose outputs are the FFN neurons: ``up`` (the default), or ``gate``
        and ``up`` of a gated (SwiGLU) MLP; :meth:`slice_ffn` slices them together."""
        return (self.ffn(layer)[0],)

    def slice_ffn(self, layer: nn.Module, neurons: Sequence[int] | torch.Tensor) -> None:
        """Keep FFN ``neurons`` of ``layer``: the outputs of every :meth:`ffn_inputs`
        projection and the inputs of ``down``, in place (a permutation reorders them)."""
        for proj in self.ffn_inputs(layer):
            slice_projection(proj, out_idx=neurons)
        slice_projection(self.ffn(layer)[1], in_idx=neurons)

    def embedding(self, model: nn.Module) -> nn.Module:
        """The input embedding (token or patch embedding)."""
        return model.get_input_embeddings()

    def num_heads(self, layer: nn.Module, head_dim: int) -> int:
        """Heads a layer has now, read from its first head projection's shape."""
        return out_features(self.head_projections(layer)[0]) // self.head_sections // head_dim

    def ffn_width(self, layer: nn.Module) -> int:
        """FFN neurons a layer has now."""
        return out_features(self.ffn(layer)[0])

    # -- keeping attributes in step with shapes -------------------------------------------

    def sync_layer(self, layer: nn.Module, index: int, num_heads: int, head_dim: int) -> None:
        """Set attributes a layer caches from its config (head counts, split sizes).

        Called after surgery and after loading, for every layer; ``index`` is the layer's
        position in the (pruned) model. The default renumbers ``layer_idx`` (KV-cache slot).
        """
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = index

    def sync_model(self, model: nn.Module) -> None:
        """Set model-level attributes that count layers (besides ``config.num_hidden_layers``)."""
        return None

    def set_layer_shapes(self, model: nn.Module) -> None:
        """Make config and module attributes agree with the (possibly pruned) module shapes.

        Records ``config.paretoforge_shapes = {"heads": [...], "intermediate": [...]}`` so that
        ``config.json`` carries what :func:`paretoforge.models.io.load_pretrained` rebuilds.
        """
        hd = self.head_dim(model)
        layers = self.layers(model)
        for i, layer in enumerate(layers):
            self.sync_layer(layer, i, self.num_heads(layer, hd), hd)
        model.config.num_hidden_layers = len(layers)
        self.sync_model(model)
        setattr(model.config, SHAPES_ATTR, layer_shapes(model, self))

    # -- building -------------------------------------------------------------------------

    def tiny_config(self) -> Any:
        """A config of a tiny random model of this family, from :attr:`tiny_config_args`.

        Eager attention, so that the model exports to ONNX simply. Build it with
        :meth:`build`; the contract suite runs on it.

        Example:
            >>> from paretoforge.models.adapters import ADAPTERS
            >>> ADAPTERS.get("bert").tiny_config().num_hidden_layers
            2

        Raises:
            BuildError: the adapter declares no :attr:`tiny_config_args`.
        """
        import transformers

        if not self.tiny_config_args:
            raise BuildError(
                f"{type(self).__name__} declares no tiny_config_args; give it the "
                f"{self.config_class or 'config'} arguments of a 2-layer, hidden-32 model."
            )
        config_cls = getattr(transformers, self.config_class)
        return config_cls(**self.tiny_config_args, attn_implementation="eager")

    def check_supported(self, config: Any) -> None:
        """Raise :class:`BuildError` for config options this adapter cannot prune."""
        return None

    def check_layers_kept(self, model: nn.Module, kept: Sequence[int]) -> None:
        """Raise :class:`BuildError` if this family cannot keep exactly layers ``kept``."""
        return None

    def build(self, config: Any, architecture: str | None = None) -> nn.Module:
        """A randomly initialised model of the config's (or the given) architecture."""
        import transformers

        name = architecture or (list(getattr(config, "architectures", None) or [None])[0])
        name = name or self.architectures[0]
        if name not in self.architectures:
            raise BuildError(
                f"Architecture {name!r} is not supported for model_type "
                f"{config.model_type!r}. Supported: {', '.join(self.architectures)}."
            )
        self.check_supported(config)
        return getattr(transformers, name)(config)


ADAPTERS: Registry[FamilyAdapter] = Registry("model family")


def layer_shapes(model: nn.Module, adapter: FamilyAdapter) -> dict[str, list[int]]:
    """Per-layer head counts and FFN widths of ``model`` as a JSON-able dict."""
    hd = adapter.head_dim(model)
    layers = adapter.layers(model)
    return {
        "heads": [adapter.num_heads(layer, hd) for layer in layers],
        "intermediate": [adapter.ffn_width(layer) for layer in layers],
    }
