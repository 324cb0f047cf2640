from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def eval_vit() -> torch.nn.Module:
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=8,
        patch_size=2,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=10,
    )
    return transformers.ViTForImageClassification(config).eval()


@pytest.fixture(scope="session")
def eval_onnx(eval_vit: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from paretoforge.kernels import export_onnx

    path = tmp_path_factory.mktemp("evaluators") / "vit.onnx"
    return export_onnx(eval_vit, {"pixel_values": torch.randn(2, 1, 8, 8)}, path)


@pytest.fixture(scope="session")
def samples() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
