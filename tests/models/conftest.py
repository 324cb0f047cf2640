"""Tiny models and data for the model-surgery tests (2 layers, hidden 32, 4 heads, FFN 64)."""

from __future__ import annotations

import pytest
import torch

from paretoforge.models.vit import ViTRecipe, build_vit

TINY = ViTRecipe(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, epochs=1)


@pytest.fixture
def tiny_model():
    """A randomly initialised tiny ViT (seeded), in eval mode."""
    return build_vit(TINY)


@pytest.fixture(scope="session")
def digits():
    from paretoforge.tasks import load_task

    return load_task("digits")


@pytest.fixture
def batch():
    """A few random 8x8 one-channel images."""
    return torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def eval_logits(model, x):
    """Logits of ``model`` in eval mode, without gradients."""
    with torch.no_grad():
        return model.eval()(x).logits


@pytest.fixture
def logits():
    """The :func:`eval_logits` helper (a fixture: test modules cannot import conftest)."""
    return eval_logits
