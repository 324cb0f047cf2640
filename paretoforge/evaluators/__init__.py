"""Evaluators: task quality, the latency measurement protocol, size, latency predictors.

Cheap to import: numpy, torch and onnxruntime are imported inside the functions that use them.

Example:
    >>> from paretoforge.evaluators import median_ci
    >>> median_ci([1.0, 2.0, 3.0])
    (1.0, 3.0)
"""

from __future__ import annotations

from paretoforge.evaluators.inputs import make_feeds
from paretoforge.evaluators.latency import (
    Measurement,
    measure_latency,
    median_ci,
)
from paretoforge.evaluators.predictor import LatencyPredictor, features_from
from paretoforge.evaluators.quality import onnx_accuracy, onnx_logits, torch_accuracy, torch_logits
from paretoforge.evaluators.size import onnx_param_count, onnx_size_bytes, param_count

__all__ = [
    "LatencyPredictor",
    "Measurement",
    "features_from",
    "make_feeds",
    "measure_latency",
    "median_ci",
    "onnx_accuracy",
    "onnx_logits",
    "onnx_param_count",
    "onnx_size_bytes",
    "param_count",
    "torch_accuracy",
    "torch_logits",
]
