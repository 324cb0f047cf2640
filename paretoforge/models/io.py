"""Checkpoints of (possibly pruned) models: ``model.safetensors`` + ``config.json``.

Nothing is unpickled and no remote code runs: the config is read as JSON into the transformers
config class the family adapter names, the model class is one the adapter allows, and weights
come from safetensors only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from paretoforge._io import atomic_write_bytes, atomic_write_text
from paretoforge.exceptions import BuildError
from paretoforge.models.adapters import ADAPTERS, SHAPES_ATTR, adapter_for, layer_shapes
from paretoforge.models.surgery import head_indices, slice_linear

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "load_pretrained", "save_pretrained"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_TIED_KEY = "paretoforge_tied"  # safetensors metadata: {dropped name: kept name} of shared tensors


def save_pretrained(model: nn.Module, directory: str | os.PathLike[str]) -> None:
    """Write ``model.safetensors`` and ``config.json`` into ``directory``, each atomically.

    The config carries ``architectures`` and ``paretoforge_shapes`` (per-layer head counts and
    FFN widths) so that :func:`load_pretrained` can rebuild a pruned model. Tensors that share
    memory (tied weights) are stored once.

    Example:
        >>> save_pretrained(model, "out/ckpt")  # doctest: +SKIP
        >>> same = load_pretrained("out/ckpt")  # doctest: +SKIP
    """
    from safetensors.torch import save

    adapter = adapter_for(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for name, tensor in model.state_dict().items():
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.shape,
                 tensor.stride(), tensor.dtype)  # fmt: skip
        if ident in seen and tensor.numel() > 0:
            tied[name] = seen[ident]
            continue
        seen[ident] = name
        tensors[name] = tensor.detach().to("cpu").contiguous()
    metadata = {"format": "pt", _TIED_KEY: json.dumps(tied, sort_keys=True)}
    atomic_write_bytes(directory / WEIGHTS_NAME, save(tensors, metadata=metadata))

    config = model.config.to_dict()
    config["architectures"] = [type(model).__name__]
    config[SHAPES_ATTR] = layer_shapes(model, adapter)
    config["num_hidden_layers"] = len(adapter.layers(model))
    atomic_write_text(directory / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_pretrained(
    directory: str | os.PathLike[str], *, attn_implementation: str = "eager"
) -> nn.Module:
    """Rebuild a model written by :func:`save_pretrained`, in eval mode.

    Linear modules are resized to the recorded per-layer shapes before the weights are loaded
    strictly, so a pruned checkpoint loads into a model of exactly its shapes.

    Args:
        directory: Directory holding ``config.json`` and ``model.safetensors``.
        attn_implementation: Attention kernel of the rebuilt model (``"eager"`` exports to ONNX
            most simply).

    Raises:
        BuildError: A file is missing or unreadable, the family is unknown, or the weights do not
            match the config.
    """
    import transformers
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise BuildError(
                f"Checkpoint file {str(path)!r} is missing; a checkpoint directory needs "
                f"{CONFIG_NAME} and {WEIGHTS_NAME} (written by paretoforge save_pretrained)."
            )
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildError(f"Cannot read {str(config_path)!r} as JSON: {exc}.") from exc
    if not isinstance(data, dict) or "model_type" not in data:
        raise BuildError(f"{str(config_path)!r} has no 'model_type'; it is not a model config.")

    model_type = str(data["model_type"])
    adapter = ADAPTERS.get(model_type)
    shapes = data.pop(SHAPES_ATTR, None)
    config_cls = getattr(transformers, adapter.config_class)
    try:
        config = config_cls.from_dict(data)
    except Exception as exc:  # transformers raises various types for bad configs
        raise BuildError(f"Invalid config in {str(config_path)!r}: {exc}.") from exc
    config._attn_implementation = attn_implementation

    with torch.random.fork_rng(devices=[]):  # random init is overwritten; keep callers' RNG
        model = adapter.build(config)
    if shapes is not None:
        _apply_shapes(model, shapes, config_path)

    try:
        state = load_file(str(weights_path))
        with safe_open(str(weights_path), framework="pt") as f:
            tied = json.loads((f.metadata() or {}).get(_TIED_KEY, "{}"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BuildError(f"Cannot read weights {str(weights_path)!r}: {exc}.") from exc
    for dropped, kept in tied.items():
        if kept in state:
            state[dropped] = state[kept]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BuildError(
            f"Weights in {str(weights_path)!r} do not match {str(config_path)!r}: {exc}"
        ) from exc
    return model.eval()


def _apply_shapes(model: nn.Module, shapes: Any, config_path: Path) -> None:
    """Shrink the freshly built model's Linear modules to the recorded per-layer shapes."""
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    hd = adapter.head_dim(model)
    heads = shapes.get("heads") if isinstance(shapes, dict) else None
    widths = shapes.get("intermediate") if isinstance(shapes, dict) else None
    if not isinstance(heads, list) or not isinstance(widths, list):
        raise BuildError(
            f"{str(config_path)!r}: {SHAPES_ATTR} must be {{'heads': [...], "
            f"'intermediate': [...]}}, got {shapes!r}."
        )
    if not len(heads) == len(widths) == len(layers):
        raise BuildError(
            f"{str(config_path)!r}: {SHAPES_ATTR} lists {len(heads)} head counts and "
            f"{len(widths)} FFN widths for num_hidden_layers={len(layers)}; they must agree."
        )
    for i, (layer, n_heads, width) in enumerate(zip(layers, heads, widths, strict=True)):
        q, k, v, o = adapter.attention(layer)
        up, down = adapter.ffn(layer)
        max_heads, max_width = adapter.num_heads(layer, hd), up.out_features
        if not (isinstance(n_heads, int) and 1 <= n_heads <= max_heads):
            raise BuildError(
                f"{str(config_path)!r}: layer {i} records {n_heads!r} heads; must be "
                f"1..{max_heads}."
            )
        if not (isinstance(width, int) and 1 <= width <= max_width):
            raise BuildError(
                f"{str(config_path)!r}: layer {i} records FFN width {width!r}; must be "
                f"1..{max_width}."
            )
        feat = head_indices(range(n_heads), hd)
        for proj in (q, k, v):
            slice_linear(proj, out_idx=feat)
        slice_linear(o, in_idx=feat)
        slice_linear(up, out_idx=range(width))
        slice_linear(down, in_idx=range(width))
    adapter.set_layer_shapes(model)
