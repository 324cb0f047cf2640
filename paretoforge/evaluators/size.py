"""Size of a candidate: bytes on disk and parameter counts."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from paretoforge.exceptions import MeasurementError

if TYPE_CHECKING:
    import torch

__all__ = ["onnx_param_count", "onnx_size_bytes", "param_count"]


def onnx_size_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes of the ONNX file on disk (graph and weights; external data files not included).

    On small models the graph structure is a large share of the file; see
    :func:`paretoforge.kernels.ort.graph_summary` for the weight bytes alone.
    """
    try:
        return os.stat(path).st_size
    except OSError as err:
        raise MeasurementError(f"Cannot size {str(path)!r}: {err}") from None


def param_count(model: torch.nn.Module) -> int:
    """Parameters of ``model``, each tensor counted once (tied weights are not double-counted).

    Example:
        >>> import torch
        >>> param_count(torch.nn.Linear(3, 2))
        8
    """
    seen: dict[tuple[int, int], int] = {}
    for p in model.parameters():
        # Two Parameter objects may view the same storage (tied embeddings after surgery).
        seen[(p.data_ptr(), p.numel())] = p.numel()
    return sum(seen.values())


def onnx_param_count(path: str | os.PathLike[str]) -> int:
    """Elements in the ONNX file's initializers.

    For a quantized model this counts the int8 weights plus their scales and zero points, and
    for any model the constants the exporter folded (shape tensors, transposed copies), so it is
    close to, not equal to, :func:`param_count` of the source module.
    """
    import numpy as np
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise MeasurementError(f"Cannot read ONNX file {str(path)!r}: {err}") from err
    return int(sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer))
