"""The built-in ViT recipe: validated data, trained once, cached atomically, loaded safely."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from paretoforge.exceptions import SpecError
from paretoforge.models import vit
from paretoforge.models.vit import (
    DEFAULT_DIGITS_RECIPE,
    ViTRecipe,
    build_vit,
    get_base_model,
    recipe_key,
)

TINY = ViTRecipe(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, epochs=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hidden_size": 30, "num_heads": 4}, "multiple of num_heads"),
        ({"patch_size": 3}, "multiple of patch_size"),
        ({"num_layers": 0}, "num_layers"),
        ({"epochs": 1.5}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"dropout": 1.0}, "dropout"),
        ({"aug_rotate_deg": -1.0}, "aug_rotate_deg"),
        ({"lr": "fast"}, "lr"),
    ],
)
def test_recipe_rejects_bad_values(kwargs, match):
    with pytest.raises(SpecError, match=match):
        ViTRecipe(**kwargs)


def test_recipe_round_trips_and_rejects_unknown_fields():
    data = json.loads(json.dumps(DEFAULT_DIGITS_RECIPE.to_dict()))
    assert ViTRecipe.from_dict(data) == DEFAULT_DIGITS_RECIPE
    with pytest.raises(SpecError, match="hiden_size"):
        ViTRecipe.from_dict({"hiden_size": 3})


def test_cache_key_depends_on_recipe_and_split_only(digits):
    from paretoforge.tasks import load_task

    assert recipe_key(TINY, digits) == recipe_key(dataclasses.replace(TINY), digits)
    # 1 and 1.0 are the same learning rate, hence the same key.
    assert recipe_key(dataclasses.replace(TINY, lr=1), digits) == recipe_key(
        dataclasses.replace(TINY, lr=1.0), digits
    )
    assert recipe_key(TINY, digits) != recipe_key(dataclasses.replace(TINY, seed=1), digits)
    assert recipe_key(TINY, digits) != recipe_key(TINY, load_task("digits", seed=1))


def test_build_is_seeded(batch, logits):
    torch.manual_seed(123)
    a = logits(build_vit(TINY), batch)
    torch.manual_seed(456)
    b = logits(build_vit(TINY), batch)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert build_vit(TINY).config._attn_implementation == "eager"


def test_base_model_is_trained_once_then_loaded_from_cache(
    digits, tmp_path, monkeypatch, batch, logits
):
    model, info = get_base_model(TINY, digits, tmp_path)
    assert info["cached"] is False and 0.0 <= info["heldout_accuracy"] <= 1.0
    entry = tmp_path / info["key"]
    assert sorted(p.name for p in entry.iterdir()) == [
        "config.json",
        "info.json",
        "model.safetensors",
    ]
    assert [p.name for p in tmp_path.iterdir()] == [info["key"]]  # no temp dir left behind

    def no_training(*args, **kwargs):
        raise AssertionError("a cached base model must not be retrained")

    monkeypatch.setattr(vit, "train_base", no_training)
    again, info2 = get_base_model(TINY, digits, tmp_path)
    assert info2["cached"] is True
    assert info2["heldout_accuracy"] == info["heldout_accuracy"]
    for (k, v), (k2, v2) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2)
    torch.testing.assert_close(logits(again, batch), logits(model, batch), atol=0, rtol=0)


def test_label_count_must_match_the_task(digits):
    with pytest.raises(SpecError, match="num_labels=10"):
        vit.train_base(dataclasses.replace(TINY, num_labels=3), digits)


@pytest.mark.slow
def test_default_recipe_reaches_95_percent_on_heldout(digits, tmp_path):
    from paretoforge.models._train import accuracy

    model, info = get_base_model(DEFAULT_DIGITS_RECIPE, digits, tmp_path)
    assert info["heldout_accuracy"] >= 0.95
    assert accuracy(model, digits.x_heldout, digits.y_heldout) == info["heldout_accuracy"]


def test_training_is_deterministic(digits, batch, logits):
    a = vit.train_base(TINY, digits)
    b = vit.train_base(TINY, digits)
    torch.testing.assert_close(logits(a, batch), logits(b, batch), atol=0, rtol=0)
