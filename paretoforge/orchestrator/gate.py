"""A node-wide readers-writer gate: builds share the cores, an all-core measurement has them alone.

Builders train on their own pinned core and hold the gate *shared*; a measurement on a profile
that uses every core holds it *exclusive*, so no build runs beside it. Waiting writers block new
readers, so a measurement is never starved by a stream of builds.

The gate is a plain class (tested without Ray) that the driver turns into an async Ray actor;
:class:`GateClient` gives workers context managers over either.

Example:
    >>> gate = LocalGate()
    >>> with gate.shared():
    ...     pass
    >>> with gate.exclusive():
    ...     pass
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["CoreGate", "GateClient", "LocalGate"]


class CoreGate:
    """Async readers-writer lock with writer preference, for use as a Ray async actor."""

    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._cond: asyncio.Condition | None = None

    def _c(self) -> asyncio.Condition:
        if self._cond is None:  # created lazily inside the actor's event loop
            self._cond = asyncio.Condition()
        return self._cond

    async def acquire_shared(self) -> None:
        c = self._c()
        async with c:
            await c.wait_for(lambda: not self._writer and self._writers_waiting == 0)
            self._readers += 1

    async def release_shared(self) -> None:
        c = self._c()
        async with c:
            self._readers -= 1
            c.notify_all()

    async def acquire_exclusive(self) -> None:
        c = self._c()
        async with c:
            self._writers_waiting += 1
            try:
                await c.wait_for(lambda: not self._writer and self._readers == 0)
            finally:
                self._writers_waiting -= 1
            self._writer = True

    async def release_exclusive(self) -> None:
        c = self._c()
        async with c:
            self._writer = False
            c.notify_all()

    async def state(self) -> dict[str, int]:
        return {"readers": self._readers, "writer": int(self._writer),
                "writers_waiting": self._writers_waiting}


class LocalGate:
    """The same protocol for one process (threads); used when no Ray actor is given."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and self._writers_waiting == 0)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            self._cond.wait_for(lambda: not self._writer and self._readers == 0)
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class GateClient:
    """Context managers over a :class:`CoreGate` Ray actor handle."""

    def __init__(self, handle: Any) -> None:
        self._h = handle

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        import ray

        ray.get(self._h.acquire_shared.remote())
        try:
            yield
        finally:
            ray.get(self._h.release_shared.remote())

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        import ray

        ray.get(self._h.acquire_exclusive.remote())
        try:
            yield
        finally:
            ray.get(self._h.release_exclusive.remote())
