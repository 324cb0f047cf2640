"""A node-wide readers-writer gate: builds share the cores, an all-core measurement has them alone.

Builders train on their own pinned core and hold the gate *shared*; a measurement on a profile
that uses every core holds it *exclusive*, so no build runs beside it. Waiting writers block new
readers, so a measurement is never starved by a stream of builds; and a build yields at its
yield points (:func:`paretoforge._system.yield_point`, once per distillation step): when a
measurement waits, the build lets go of its shared hold, waits for the measurement's timed
calls to end, and takes it again. An all-core measurement therefore waits for the next step of
a neighbour's build, not for the whole build.

The gate is a plain class (tested without Ray) that the driver turns into an async Ray actor;
:class:`GateClient` gives workers context managers over either.

Example:
    >>> gate = LocalGate()
    >>> with gate.shared():
    ...     pass
    >>> with gate.exclusive():
    ...     pass
    >>> with gate.shared():
    ...     gate.yield_to_writers()  # nobody waits: keeps its hold
    False
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["CoreGate", "GateClient", "LocalGate"]


class CoreGate:
    """Async readers-writer lock with writer preference, for use as a Ray async actor.

    Every call names its ``holder`` (one id per worker actor, never reused), so that the driver
    can release what a dead worker held with :meth:`release_holder`: a worker killed inside a
    build or a measurement would otherwise block its node's gate for good.
    """

    def __init__(self) -> None:
        self._readers: dict[str, int] = {}
        self._writer: str | None = None
        self._writers_waiting = 0
        self._dead: set[str] = set()
        self._cond: asyncio.Condition | None = None

    def _c(self) -> asyncio.Condition:
        if self._cond is None:  # created lazily inside the actor's event loop
            self._cond = asyncio.Condition()
        return self._cond

    async def acquire_shared(self, holder: str = "") -> bool:
        """Wait for no writer (held or waiting), then hold the gate shared; False if dead."""
        c = self._c()
        async with c:
            await c.wait_for(lambda: holder in self._dead
                             or (self._writer is None and self._writers_waiting == 0))
            if holder in self._dead:
                return False
            self._readers[holder] = self._readers.get(holder, 0) + 1
            return True

    def _drop_shared(self, holder: str) -> None:
        """One shared hold of ``holder`` fewer (the caller holds the condition)."""
        n = self._readers.get(holder, 0) - 1
        if n > 0:
            self._readers[holder] = n
        else:
            self._readers.pop(holder, None)

    async def release_shared(self, holder: str = "") -> None:
        c = self._c()
        async with c:
            self._drop_shared(holder)
            c.notify_all()

    async def yield_shared(self, holder: str = "") -> bool:
        """If a writer waits, drop one shared hold of ``holder``, let the writers through and
        take it back; True when it yielded. A cheap no-op when no writer waits."""
        c = self._c()
        async with c:
            if self._writers_waiting == 0 or holder in self._dead:
                return False
            self._drop_shared(holder)
            c.notify_all()
            await c.wait_for(lambda: holder in self._dead
                             or (self._writer is None and self._writers_waiting == 0))
            if holder not in self._dead:
                self._readers[holder] = self._readers.get(holder, 0) + 1
            return True

    async def acquire_exclusive(self, holder: str = "") -> bool:
        """Wait for no reader and no writer, then hold the gate alone; False if dead."""
        c = self._c()
        async with c:
            self._writers_waiting += 1
            try:
                await c.wait_for(lambda: holder in self._dead
                                 or (self._writer is None and not self._readers))
            finally:
                self._writers_waiting -= 1
            if holder in self._dead:
                c.notify_all()
                return False
            self._writer = holder
            return True

    async def release_exclusive(self, holder: str = "") -> None:
        c = self._c()
        async with c:
            if self._writer == holder:
                self._writer = None
            c.notify_all()

    async def release_holder(self, holder: str) -> None:
        """Drop everything ``holder`` holds or waits for; it never holds the gate again."""
        c = self._c()
        async with c:
            self._dead.add(holder)
            self._readers.pop(holder, None)
            if self._writer == holder:
                self._writer = None
            c.notify_all()

    async def state(self) -> dict[str, int]:
        return {"readers": sum(self._readers.values()), "writer": int(self._writer is not None),
                "writers_waiting": self._writers_waiting}


class LocalGate:
    """The same protocol for one process (threads); used when no Ray actor is given."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._held = threading.local()  # this thread's shared holds (yield only inside one)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and self._writers_waiting == 0)
            self._readers += 1
        self._held.depth = getattr(self._held, "depth", 0) + 1
        try:
            yield
        finally:
            self._held.depth -= 1
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    def yield_to_writers(self) -> bool:
        """Inside :meth:`shared`: if an exclusive hold waits, let it run first; True if it did.

        Outside a shared hold (of this thread) it does nothing.
        """
        if getattr(self._held, "depth", 0) == 0:
            return False
        with self._cond:
            if self._writers_waiting == 0:
                return False
            self._readers -= 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self._writer and self._writers_waiting == 0)
            self._readers += 1
        return True

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
    """Context managers over a :class:`CoreGate` Ray actor handle, on behalf of ``holder``.

    :meth:`yield_to_writers` asks the gate at most once per ``yield_every_s`` (a round trip to
    the gate actor costs about a millisecond; a distillation step calls it every step).
    """

    def __init__(self, handle: Any, holder: str = "", *, yield_every_s: float = 0.05) -> None:
        self._h = handle
        self._holder = holder
        self._held = 0
        self._yield_every_s = yield_every_s
        self._last_yield_check = 0.0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        import ray

        ray.get(self._h.acquire_shared.remote(self._holder))
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            ray.get(self._h.release_shared.remote(self._holder))

    def yield_to_writers(self) -> bool:
        """Inside :meth:`shared`: let a waiting exclusive hold run first; True if it did."""
        now = time.monotonic()
        if self._held == 0 or now - self._last_yield_check < self._yield_every_s:
            return False
        self._last_yield_check = now
        import ray

        return bool(ray.get(self._h.yield_shared.remote(self._holder)))

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        import ray

        ray.get(self._h.acquire_exclusive.remote(self._holder))
        try:
            yield
        finally:
            ray.get(self._h.release_exclusive.remote(self._holder))
