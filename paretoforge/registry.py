"""One generic registry for named components: spaces, profiles, tasks, model recipes.

Example:
    >>> from paretoforge.registry import Registry
    >>> COLORS: Registry[str] = Registry("color")
    >>> @COLORS.register("red")
    ... def red() -> str:
    ...     return "#f00"
    >>> COLORS.get("red")()
    '#f00'
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from paretoforge.exceptions import UnknownComponentError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """A name -> component mapping; duplicates raise, unknown names raise with suggestions."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"A {self.kind} named {name!r} is already registered.")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownComponentError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        available = ", ".join(sorted(self._items)) or "(none)"
        msg = f"Unknown {self.kind} {name!r}. Available: {available}."
        close = difflib.get_close_matches(name, list(self._items), n=1, cutoff=0.6)
        if close:
            msg += f" Did you mean {close[0]!r}?"
        return msg

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
