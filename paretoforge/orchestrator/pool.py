"""A fixed number of worker actors; a lost one is replaced by a fresh actor.

A worker slot is *starting* until its actor answers ``ping()``, then *idle* or *busy*. A worker
that dies (SIGKILL, out of memory, node lost) or is killed by the driver (a trial past its
timeout) is replaced at once; the replacement counts as free only once it answers, so a
replacement that cannot be placed (its node is gone and no other node has room) never holds up
the search, which goes on with the workers it has.

Every actor gets a ``holder`` id, never reused, under which it takes its node's core gate; the
pool releases a lost worker's holds on every gate, so a worker killed inside a measurement does
not block its node.

Example:
    >>> pool = WorkerPool(lambda i, holder: make_actor(i, holder), 2)  # doctest: +SKIP
    >>> slot = pool.take()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from paretoforge.exceptions import PlacementError

__all__ = ["WORKER_START_TIMEOUT_S", "WorkerPool", "is_worker_lost"]

WORKER_START_TIMEOUT_S = 300.0  # no worker up for this long, with work waiting: give up
MAX_START_FAILURES = 3  # a slot whose actor fails to start this many times in a row is dropped


def is_worker_lost(exc: BaseException) -> bool:
    """True when ``exc`` says the worker process or its node is gone (not a build error)."""
    import ray.exceptions as rex

    lost: tuple[type[BaseException], ...] = (rex.RayActorError, rex.WorkerCrashedError,
                                             rex.NodeDiedError, rex.ObjectLostError,
                                             rex.OwnerDiedError)
    oom = getattr(rex, "OutOfMemoryError", None)
    if oom is not None:
        lost += (oom,)
    return isinstance(exc, lost) and not isinstance(exc, rex.RayTaskError)


@dataclass
class Slot:
    """One worker position: its current actor and what the driver knows about it."""

    index: int
    handle: Any
    holder: str
    state: str = "starting"  # starting | idle | busy | gone
    ping_ref: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.monotonic)
    start_failures: int = 0


class WorkerPool:
    """Worker actors made by ``factory(index, holder)``; see the module docstring.

    Args:
        factory: Creates one actor (a Ray actor handle with ``ping`` and ``evaluate``).
        n: Number of worker slots.
        gates: Node id -> core-gate actor handle, released for lost workers.
        log: Where to say that a worker was replaced or dropped.
    """

    def __init__(self, factory: Callable[[int, str], Any], n: int, *,
                 gates: dict[str, Any] | None = None, log: Callable[[str], None] = print) -> None:
        self._factory = factory
        self._generation = itertools.count()
        self._gates = gates or {}
        self._log = log
        self.slots = [self._spawn(i) for i in range(n)]
        self.replaced = 0

    def _spawn(self, index: int, start_failures: int = 0) -> Slot:
        holder = f"w{index}.{next(self._generation)}"
        handle = self._factory(index, holder)
        return Slot(index=index, handle=handle, holder=holder, ping_ref=handle.ping.remote(),
                    start_failures=start_failures)

    # -- queries -----------------------------------------------------------------------------

    def pending_pings(self) -> dict[Any, int]:
        return {s.ping_ref: s.index for s in self.slots if s.state == "starting"}

    def has_idle(self) -> bool:
        return any(s.state == "idle" for s in self.slots)

    def usable(self) -> int:
        """Slots that are up or may still come up."""
        return sum(s.state != "gone" for s in self.slots)

    def up(self) -> int:
        return sum(s.state in ("idle", "busy") for s in self.slots)

    def oldest_start(self) -> float | None:
        starts = [s.created for s in self.slots if s.state == "starting"]
        return min(starts) if starts else None

    # -- verbs -------------------------------------------------------------------------------

    def take(self) -> Slot | None:
        """An idle slot, now busy; None if every worker is busy or starting."""
        for s in self.slots:
            if s.state == "idle":
                s.state = "busy"
                return s
        return None

    def release(self, index: int) -> None:
        """The slot's trial is over; its worker takes the next one."""
        s = self.slots[index]
        if s.state == "busy":
            s.state = "idle"

    def on_ping(self, ref: Any) -> str:
        """Handle a ready ``ping`` reference; return what became of the slot."""
        import ray

        index = next(s.index for s in self.slots if s.ping_ref == ref)
        slot = self.slots[index]
        slot.ping_ref = None
        try:
            slot.info = dict(ray.get(ref))
        except Exception as e:  # the actor could not start (constructor error, node lost)
            reason = f"{type(e).__name__}: {_first_line(e)}"
            if slot.start_failures + 1 >= MAX_START_FAILURES:
                slot.state = "gone"
                self._release_holds(slot)
                self._log(f"worker {index} could not start {MAX_START_FAILURES} times; going "
                          f"on without it ({reason})")
                if self.usable() == 0:
                    raise PlacementError(
                        f"no worker could start: {reason}; check the cluster (`ray status`) "
                        "and the worker's environment"
                    ) from None
                return "gone"
            self.slots[index] = self._spawn(index, slot.start_failures + 1)
            return "restarted"
        slot.state = "idle"
        slot.start_failures = 0
        return "ready"

    def replace(self, index: int) -> Slot:
        """Kill slot ``index``'s actor (if it still runs), free its gate holds, start another."""
        import ray

        old = self.slots[index]
        try:
            ray.kill(old.handle, no_restart=True)
        except Exception:  # already gone
            pass
        self._release_holds(old)
        self.replaced += 1
        self.slots[index] = self._spawn(index)
        return old

    def check_start_timeout(self, now: float, timeout_s: float = WORKER_START_TIMEOUT_S) -> None:
        """Raise PlacementError when no worker is up and one has been starting too long."""
        oldest = self.oldest_start()
        if self.up() == 0 and oldest is not None and now - oldest > timeout_s:
            raise PlacementError(
                f"no worker started within {timeout_s:.0f}s: the cluster has no room for "
                f"{len(self.slots)} worker(s) of cluster.cpus_per_worker CPUs; lower "
                "cluster.workers or cluster.cpus_per_worker, or add nodes"
            )

    def shutdown(self, *, close_timeout_s: float = 5.0) -> None:
        """Close every idle worker that has a ``close`` (it removes its stage cache; a busy
        one's is swept later, :func:`~paretoforge.pipeline.cache.sweep_stale_caches`), for at
        most ``close_timeout_s``, then kill every worker actor."""
        import ray

        closing = []
        for s in self.slots:
            if s.state == "idle" and hasattr(s.handle, "close"):
                with contextlib.suppress(Exception):
                    closing.append(s.handle.close.remote())
        if closing:
            with contextlib.suppress(Exception):
                ray.wait(closing, num_returns=len(closing), timeout=close_timeout_s)
        for s in self.slots:
            try:
                ray.kill(s.handle, no_restart=True)
            except Exception:
                pass

    def _release_holds(self, slot: Slot) -> None:
        for gate in self._gates.values():
            try:
                gate.release_holder.remote(slot.holder)
            except Exception:  # the gate's node is gone too
                pass


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__
