from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from paretoforge.evaluators import (
    onnx_accuracy,
    onnx_logits,
    onnx_param_count,
    onnx_size_bytes,
    param_count,
    torch_accuracy,
    torch_logits,
)
from paretoforge.exceptions import MeasurementError


def test_onnx_and_torch_agree(
    eval_vit: torch.nn.Module, eval_onnx: Path, samples: np.ndarray
) -> None:
    a = onnx_logits(eval_onnx, samples, batch_size=5)  # uneven last batch
    b = torch_logits(eval_vit, samples, batch_size=5)
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    y = b.argmax(1)
    assert onnx_accuracy(eval_onnx, samples, y, batch_size=4) == 1.0
    assert torch_accuracy(eval_vit, samples, torch.as_tensor(y)) == 1.0
    wrong = (y + 1) % 10
    assert onnx_accuracy(eval_onnx, samples, wrong) == 0.0
    assert torch_accuracy(eval_vit, samples, wrong) == 0.0


def test_torch_accuracy_restores_training_mode(
    eval_vit: torch.nn.Module, samples: np.ndarray
) -> None:
    eval_vit.train()
    try:
        torch_accuracy(eval_vit, samples, np.zeros(len(samples), dtype=np.int64))
        assert eval_vit.training
    finally:
        eval_vit.eval()


def test_quality_input_errors(eval_onnx: Path, samples: np.ndarray) -> None:
    y = np.zeros(len(samples), dtype=np.int64)
    with pytest.raises(MeasurementError, match="'images' is not an input"):
        onnx_accuracy(eval_onnx, samples, y, input_name="images")
    with pytest.raises(MeasurementError, match="float32"):
        onnx_accuracy(eval_onnx, samples.astype(np.float64), y)
    with pytest.raises(MeasurementError, match="1-D array of 16 labels"):
        onnx_accuracy(eval_onnx, samples, y[:3])
    with pytest.raises(MeasurementError, match="cannot load"):
        onnx_accuracy(eval_onnx.with_name("missing.onnx"), samples, y)


def test_sizes(eval_vit: torch.nn.Module, eval_onnx: Path) -> None:
    n = param_count(eval_vit)
    assert n == sum(p.numel() for p in eval_vit.parameters())
    assert onnx_size_bytes(eval_onnx) > 4 * n * 0.9
    # Folded constants make the ONNX count close to, not equal to, the module's.
    assert 0.95 * n <= onnx_param_count(eval_onnx) <= 1.1 * n
    with pytest.raises(MeasurementError):
        onnx_size_bytes(eval_onnx.with_name("missing.onnx"))


def test_param_count_counts_tied_weights_once() -> None:
    a = torch.nn.Linear(4, 4, bias=False)
    b = torch.nn.Linear(4, 4, bias=False)
    b.weight = a.weight
    assert param_count(torch.nn.Sequential(a, b)) == 16
