"""The recipe contract over every registered built-in recipe: it states its shape, takes its
own overrides and refuses others, is keyed by content, and trains a base whose shape it says."""

from __future__ import annotations

import dataclasses

import pytest

from paretoforge.exceptions import SpecError
from paretoforge.models.recipes import RECIPES, get_recipe
from paretoforge.tasks import TASKS

TINY = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
        "epochs": 1}


def _task_for(recipe):
    """A registered task that trains recipes and matches the recipe's labels."""
    for name in TASKS:
        task = TASKS.get(name)
        if "recipe" in task.sources:
            data = task.load(seed=0)
            if data.num_classes == recipe.num_labels:
                return data
    pytest.skip("no registered recipe task has this recipe's number of labels")


@pytest.mark.parametrize("name", RECIPES.names())
def test_every_recipe_keeps_the_contract(name: str, tmp_path) -> None:
    from paretoforge.models.vit import get_base_model, recipe_key

    recipe = get_recipe(name)
    assert dataclasses.is_dataclass(recipe)
    assert recipe.num_layers >= 1 and recipe.num_heads >= 1
    with pytest.raises(SpecError, match="unknown recipe field"):
        get_recipe(name, no_such_field=1)
    tiny = get_recipe(name, **TINY)
    assert dataclasses.replace(recipe, **TINY) == tiny
    data = _task_for(tiny)
    assert recipe_key(tiny, data) == recipe_key(get_recipe(name, **TINY), data)
    assert recipe_key(tiny, data) != recipe_key(get_recipe(name, **{**TINY, "seed": 1}), data)
    model, info = get_base_model(tiny, data, tmp_path)
    assert int(model.config.num_hidden_layers) == tiny.num_layers
    assert int(model.config.num_attention_heads) == tiny.num_heads
    assert 0.0 <= info["heldout_accuracy"] <= 1.0 and not info.get("cached")
    _, again = get_base_model(tiny, data, tmp_path)
    assert again["cached"] and again["key"] == info["key"]
