"""Checkpoints of (possibly pruned) models: ``model.safetensors`` + ``config.json``.

Nothing is unpickled and no remote code runs: the config is read as JSON into the transformers
config class the family adapter names, the model class is one the adapter allows, and weights
come from safetensors only.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import torch
from torch import nn

from paretoforge._io import atomic_write_bytes, atomic_write_text
from paretoforge.exceptions import BuildError
from paretoforge.models.adapters import (
    ADAPTERS,
    SHAPES_ATTR,
    SOURCE_LAYERS_ATTR,
    adapter_for,
    layer_shapes,
)
from paretoforge.models.surgery import slice_heads

__all__ = [
    "CONFIG_NAME",
    "SIDE_FILES",
    "WEIGHTS_NAME",
    "copy_side_files",
    "load_pretrained",
    "load_weights_bytes",
    "save_pretrained",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_TIED_KEY = "paretoforge_tied"  # safetensors metadata: {dropped name: kept name} of shared tensors

#: Files of a checkpoint directory that pruning leaves valid: tokenizer, image processor,
#: sentence-transformers pooling. :func:`save_pretrained` copies them from ``side_files_from``.
SIDE_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "preprocessor_config.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
)


def copy_side_files(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> list[str]:
    """Copy the :data:`SIDE_FILES` that ``src`` has into ``dst``; return their names."""
    src, dst = Path(src), Path(dst)
    copied = []
    for name in SIDE_FILES:
        if (src / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / name, dst / name)
            copied.append(name)
    return copied


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    side_files_from: str | os.PathLike[str] | None = None,
) -> None:
    """Write ``model.safetensors`` and ``config.json`` into ``directory``, each atomically.

    The config carries ``architectures`` and ``paretoforge_shapes`` (per-layer head counts and
    FFN widths) so that :func:`load_pretrained` can rebuild a pruned model. Tensors that share
    memory (tied weights) are stored once.

    Args:
        model: A model of a family with an adapter.
        directory: Destination directory (created if missing).
        side_files_from: Checkpoint directory whose tokenizer / pooling files
            (:data:`SIDE_FILES`) are copied along, so the result is self-contained.

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
    source = getattr(model.config, SOURCE_LAYERS_ATTR, None)
    if source is not None:
        config[SOURCE_LAYERS_ATTR] = [int(i) for i in source]
    if side_files_from is not None:
        copy_side_files(side_files_from, directory)
    atomic_write_text(directory / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")


def _read_config(directory: Path) -> tuple[Path, dict[str, Any]]:
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise BuildError(
            f"Checkpoint file {str(config_path)!r} is missing; a checkpoint directory needs "
            f"{CONFIG_NAME} and {WEIGHTS_NAME} (save_pretrained output)."
        )
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildError(f"Cannot read {str(config_path)!r} as JSON: {exc}.") from exc
    if not isinstance(data, dict) or "model_type" not in data:
        raise BuildError(f"{str(config_path)!r} has no 'model_type'; it is not a model config.")
    return config_path, data


def load_pretrained(
    directory: str | os.PathLike[str],
    *,
    attn_implementation: str = "eager",
    architecture: str | None = None,
    **config_overrides: Any,
) -> nn.Module:
    """Load a checkpoint directory into a model of its family, in eval mode.

    Two kinds of directory load with this one call:

    * a checkpoint written by :func:`save_pretrained` (``paretoforge_shapes`` in its config):
      the model is built, its projections are resized to the recorded per-layer shapes, and the
      weights are loaded strictly, so a pruned checkpoint loads into exactly its shapes;
    * any Hugging Face ``save_pretrained`` directory of a supported family (safetensors
      weights): loaded by the architecture's own ``from_pretrained``, offline, which also maps
      older key names; ``architecture`` may name another head of the family (e.g.
      ``BertForSequenceClassification`` from a ``BertModel`` checkpoint, its head freshly
      initialised), with ``config_overrides`` such as ``num_labels=3``.

    Nothing is unpickled (safetensors only) and no remote code runs.

    Args:
        directory: Directory holding ``config.json`` and ``model.safetensors``.
        attn_implementation: Attention kernel of the model (``"eager"`` exports to ONNX most
            simply).
        architecture: Model class to build (a name in ``transformers``); default: the one the
            config lists.
        **config_overrides: Config fields to change before building (Hugging Face checkpoints
            only, e.g. ``num_labels``).

    Raises:
        BuildError: A file is missing or unreadable, the architecture is not supported, or the
            weights do not match the config.
        UnknownComponentError: The family (``model_type``) has no adapter.

    Example:
        >>> model = load_pretrained("runs/r1/artifacts/3fa2c1")  # doctest: +SKIP
    """
    import transformers

    directory = Path(directory)
    config_path, data = _read_config(directory)
    weights_path = directory / WEIGHTS_NAME
    model_type = str(data["model_type"])
    adapter = ADAPTERS.get(model_type)
    shapes = data.pop(SHAPES_ATTR, None)
    saved_arch = (data.get("architectures") or [adapter.architectures[0]])[0]
    arch = architecture or saved_arch
    if arch not in adapter.architectures:
        raise BuildError(
            f"{str(config_path)!r}: architecture {arch!r} is not supported for model_type "
            f"{model_type!r}. Supported: {', '.join(adapter.architectures)}."
        )
    if shapes is not None and (arch != saved_arch or config_overrides):
        raise BuildError(
            f"{str(config_path)!r} is a paretoforge checkpoint of {saved_arch}; it loads only as "
            f"saved (got architecture={arch!r}, overrides {sorted(config_overrides)}). Drop them."
        )
    if "num_labels" in config_overrides and "id2label" not in config_overrides:
        data.pop("id2label", None)  # the old label names would contradict the new count
        data.pop("label2id", None)
    data.update(config_overrides)
    data["architectures"] = [arch]
    config_cls = getattr(transformers, adapter.config_class)
    try:
        config = config_cls.from_dict(data)
    except Exception as exc:  # transformers raises various types for bad configs
        raise BuildError(f"Invalid config in {str(config_path)!r}: {exc}.") from exc
    config._attn_implementation = attn_implementation
    adapter.check_supported(config)

    if shapes is None:
        new_head = "num_labels" in config_overrides
        return _load_foreign(directory, config, arch, attn_implementation, new_head)

    if not weights_path.is_file():
        raise BuildError(
            f"Checkpoint file {str(weights_path)!r} is missing; a checkpoint directory needs "
            f"{CONFIG_NAME} and {WEIGHTS_NAME} (save_pretrained output)."
        )
    with torch.random.fork_rng(devices=[]):  # random init is overwritten; keep callers' RNG
        model = adapter.build(config, arch)
    _apply_shapes(model, shapes, config_path)
    source = data.get(SOURCE_LAYERS_ATTR)
    if source is not None:
        setattr(model.config, SOURCE_LAYERS_ATTR, [int(i) for i in source])

    state = _read_weights(weights_path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BuildError(
            f"Weights in {str(weights_path)!r} do not match {str(config_path)!r}: {exc}"
        ) from exc
    return model.eval()


def _read_weights(weights_path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as f:  # one open: header and tensors
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (not a dict)
            tied = json.loads((f.metadata() or {}).get(_TIED_KEY, "{}"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BuildError(f"Cannot read weights {str(weights_path)!r}: {exc}.") from exc
    return _with_tied(state, tied)


def _with_tied(state: dict[str, torch.Tensor], tied: dict[str, str]
               ) -> dict[str, torch.Tensor]:
    """``state`` with the tensors :func:`save_pretrained` stored once under their twin's name."""
    for dropped, kept in tied.items():
        if kept in state:
            state[dropped] = state[kept]
    return state


def _weights_from_bytes(data: bytes, what: str) -> dict[str, torch.Tensor]:
    """The state dict of :func:`save_pretrained`'s ``model.safetensors`` as bytes, its tied
    tensors restored."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        state = load(data)
        (size,) = struct.unpack("<Q", data[:8])  # the header: its length, then its JSON
        header = json.loads(data[8:8 + size])
        tied = json.loads((header.get("__metadata__") or {}).get(_TIED_KEY, "{}"))
    except (SafetensorError, struct.error, ValueError) as exc:
        raise BuildError(f"Cannot read weights {what}: {exc}.") from exc
    return _with_tied(state, tied)


def load_weights_bytes(model: nn.Module, data: bytes, *, what: str = "weights") -> nn.Module:
    """Load :func:`save_pretrained`'s ``model.safetensors`` (as bytes) into ``model``, whose
    shapes must be the saved ones (strict); return ``model``.

    Raises:
        BuildError: the bytes are not safetensors, or their tensors do not fit ``model``.
    """
    state = _weights_from_bytes(data, what)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BuildError(f"The weights of {what} do not fit the model: {exc}") from exc
    return model


def _load_foreign(
    directory: Path, config: Any, arch: str, attn_implementation: str, new_head: bool
) -> nn.Module:
    """A Hugging Face checkpoint directory, through the architecture's ``from_pretrained``.

    ``new_head``: the label count changed, so a classifier of the old size is re-initialised
    (transformers' ``ignore_mismatched_sizes``) instead of failing.
    """
    import transformers

    has_weights = (directory / WEIGHTS_NAME).is_file() or (
        directory / "model.safetensors.index.json"
    ).is_file()
    if not has_weights:
        raise BuildError(
            f"No safetensors weights in {str(directory)!r} (need {WEIGHTS_NAME} or a sharded "
            "index); paretoforge never unpickles .bin files: convert the checkpoint with "
            "save_pretrained(safe_serialization=True)."
        )
    cls = getattr(transformers, arch)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "newly initialised head" notes; errors raise
    progress = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        model = cls.from_pretrained(
            str(directory),
            config=config,
            local_files_only=True,
            use_safetensors=True,
            attn_implementation=attn_implementation,
            ignore_mismatched_sizes=new_head,
        )
    except Exception as exc:  # transformers raises OSError / ValueError / RuntimeError
        raise BuildError(f"Cannot load checkpoint {str(directory)!r} as {arch}: {exc}") from exc
    finally:
        transformers.logging.set_verbosity(verbosity)
        if progress:
            transformers.utils.logging.enable_progress_bar()
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
        max_heads, max_width = adapter.num_heads(layer, hd), adapter.ffn_width(layer)
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
        slice_heads(adapter, layer, range(n_heads), hd)
        adapter.slice_ffn(layer, range(width))
    adapter.set_layer_shapes(model)
