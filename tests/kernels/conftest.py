from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch


def tiny_vit(hidden: int = 32, ffn: int = 64, layers: int = 2, seed: int = 0) -> torch.nn.Module:
    import transformers

    torch.manual_seed(seed)
    config = transformers.ViTConfig(
        image_size=8,
        patch_size=2,
        num_channels=1,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=ffn,
        num_labels=10,
    )
    return transformers.ViTForImageClassification(config).eval()


@pytest.fixture(scope="session")
def make_vit() -> Callable[..., torch.nn.Module]:
    return tiny_vit


@pytest.fixture(scope="session")
def vit() -> torch.nn.Module:
    return tiny_vit()


@pytest.fixture(scope="session")
def vit_onnx(vit: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from paretoforge.kernels import export_onnx

    path = tmp_path_factory.mktemp("kernels") / "vit.onnx"
    return export_onnx(vit, {"pixel_values": torch.randn(3, 1, 8, 8)}, path)
