"""The runtime that executes a candidate: ONNX export, quantization, runtimes per profile.

Cheap to import: torch, onnx and onnxruntime are imported inside the functions that use them.

Example:
    >>> from paretoforge.kernels import PRECISIONS
    >>> PRECISIONS
    ('fp32', 'int8', 'int8-static', 'fp16', 'int4')
"""

from __future__ import annotations

from paretoforge.kernels.decoder_export import (
    CacheLayout,
    export_decoder_onnx,
    greedy_decode,
)
from paretoforge.kernels.export import default_output_fn, export_onnx
from paretoforge.kernels.ort import (
    ORT_DTYPES,
    create_session,
    graph_summary,
    providers_for,
    session_options_for,
    validate_inputs,
)
from paretoforge.kernels.quantize import (
    PRECISIONS,
    apply_precision,
    convert_fp16,
    quantize_dynamic_int8,
    quantize_int4,
)
from paretoforge.kernels.runtime import Runtime, load_runtime, placement_report

__all__ = [
    "ORT_DTYPES",
    "PRECISIONS",
    "CacheLayout",
    "Runtime",
    "apply_precision",
    "convert_fp16",
    "create_session",
    "default_output_fn",
    "export_decoder_onnx",
    "export_onnx",
    "graph_summary",
    "greedy_decode",
    "load_runtime",
    "placement_report",
    "providers_for",
    "quantize_dynamic_int8",
    "quantize_int4",
    "session_options_for",
    "validate_inputs",
]
