"""Built-in recipes: base models that paretoforge trains itself from bundled data.

Example:
    >>> from paretoforge.models.recipes import get_recipe
    >>> get_recipe("vit-digits", hidden_size=96).hidden_size
    96
"""

from __future__ import annotations

import dataclasses
from typing import Any

from paretoforge.exceptions import SpecError
from paretoforge.registry import Registry

__all__ = ["RECIPES", "get_recipe"]

# name -> zero-argument factory of the recipe dataclass (imported lazily: it pulls in torch).
RECIPES: Registry[Any] = Registry("model recipe")


@RECIPES.register("vit-digits")
def _vit_digits() -> Any:
    from paretoforge.models.vit import DEFAULT_DIGITS_RECIPE

    return DEFAULT_DIGITS_RECIPE


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
