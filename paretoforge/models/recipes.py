"""Built-in recipes: base models that paretoforge trains itself from bundled data.

Example:
    >>> from paretoforge.models.recipes import get_recipe
    >>> get_recipe("vit-digits", hidden_size=96).hidden_size
    96
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from paretoforge._io import cache_root
from paretoforge.exceptions import SpecError
from paretoforge.registry import Registry

__all__ = ["CHECKPOINT_RECIPES", "RECIPES", "cache_root", "get_recipe", "recipe_checkpoint"]

# name -> zero-argument factory of the recipe dataclass (imported lazily: it pulls in torch).
RECIPES: Registry[Any] = Registry("model recipe")


@RECIPES.register("vit-digits")
def _vit_digits() -> Any:
    from paretoforge.models.vit_recipe import DEFAULT_DIGITS_RECIPE  # no torch: specs check it

    return DEFAULT_DIGITS_RECIPE


# name -> (zero-argument recipe factory, (recipe, cache dir) -> checkpoint directory): recipes
# that come as a whole Hugging Face checkpoint with its tokenizer (``model.path: recipe:NAME``).
CHECKPOINT_RECIPES: Registry[Any] = Registry("checkpoint recipe")


@CHECKPOINT_RECIPES.register("tiny-llama")
def _tiny_llama() -> Any:
    from paretoforge.models.tiny_llama import DEFAULT_TINY_LLAMA, tiny_llama_checkpoint

    return DEFAULT_TINY_LLAMA, tiny_llama_checkpoint


def recipe_checkpoint(name: str) -> Path:
    """The checkpoint directory of the built-in checkpoint recipe ``name``, trained once into
    ``cache_root()/base/<recipe key>/`` (minutes, the first time) and found there afterwards.

    Raises:
        UnknownComponentError: no checkpoint recipe of that name.
    """
    recipe, build = CHECKPOINT_RECIPES.get(name)()
    return Path(build(recipe, cache_root() / "base"))


def get_recipe(name: str, **overrides: Any) -> Any:
    """The named recipe with ``overrides`` applied; unknown fields raise SpecError."""
    recipe = RECIPES.get(name)()
    fields = {f.name for f in dataclasses.fields(recipe)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise SpecError(
            f"model.overrides: unknown recipe field(s) {unknown} for recipe {name!r}; "
            f"its fields are {sorted(fields)}"
        )
    try:
        return dataclasses.replace(recipe, **overrides)
    except (TypeError, ValueError) as e:
        raise SpecError(f"model.overrides: {e}") from None
