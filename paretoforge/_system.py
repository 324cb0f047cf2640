"""The cores this process may run on, and pinning the calling thread to some of them.

The one home of CPU affinity for the kernels (session threads), the evaluators (the latency
protocol pins its timed calls) and the orchestrator (benches and workers). Foundation layer:
imports nothing of the package but its exceptions.

Example:
    >>> available_cores() == len(usable_cores())
    True
    >>> with pinned(None) as cores:
    ...     cores == usable_cores()
    True
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Callable, Iterator

from paretoforge.exceptions import MeasurementError

__all__ = ["available_cores", "idle_cores", "pin_process", "pinned", "set_yield_point",
           "usable_cores", "yield_point"]

# The calling process's yield hook (see set_yield_point); one per process, like the affinity.
_YIELD_HOOK: list[Callable[[], object] | None] = [None]


def set_yield_point(hook: Callable[[], object] | None) -> Callable[[], object] | None:
    """Install ``hook`` as this process's yield point; return the previous one.

    Long loops that run while a build holds its node's core gate shared (distillation steps,
    quality scoring) call :func:`yield_point`; the worker installs a hook that lets a waiting
    all-core measurement take the cores for its timed calls, then resumes. Outside a worker
    there is no hook and :func:`yield_point` does nothing.

    Example:
        >>> calls = []
        >>> prev = set_yield_point(lambda: calls.append(1))
        >>> yield_point(); _ = set_yield_point(prev); yield_point()
        >>> calls
        [1]
    """
    prev = _YIELD_HOOK[0]
    _YIELD_HOOK[0] = hook
    return prev


def yield_point() -> None:
    """Let a waiting measurement have the cores, if this process's hook says one waits."""
    hook = _YIELD_HOOK[0]
    if hook is not None:
        hook()


def usable_cores() -> list[int]:
    """The cores this thread may run on (its affinity mask), in ascending order.

    Where the platform has no affinity mask, every core the machine reports.
    """
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def available_cores() -> int:
    """How many cores this thread may run on (its affinity mask), falling back to the CPU count."""
    return len(usable_cores())


def idle_cores(sample_s: float = 0.25) -> int:
    """How many threads a training may start without spinning on busy cores (at least 1).

    The usable cores minus the cores busy *now*: their busy time in ``/proc/stat`` over
    ``sample_s`` seconds, rounded. Where there is no ``/proc/stat``, minus the 1-minute load
    average instead -- which lags: a minute after an install or a cluster start it still
    counts a core as busy, and the quickstart's base then trained on one thread in 51 s
    against 35-44 s on two.
    """
    cores = usable_cores()
    busy = _busy_cores(cores, sample_s)
    if busy is None:
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, len(cores) - int(busy + 0.5))


def _cpu_times(cores: list[int]) -> dict[int, tuple[int, int]] | None:
    """``core -> (busy, total)`` jiffies from ``/proc/stat``, or None where unreadable."""
    want = {f"cpu{c}": c for c in cores}
    out: dict[int, tuple[int, int]] = {}
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, *fields = line.split()
                if name in want and len(fields) >= 5:
                    v = [int(x) for x in fields[:8]]
                    idle = v[3] + v[4]  # idle + iowait
                    out[want[name]] = (sum(v) - idle, sum(v))
    except (OSError, ValueError):
        return None
    return out if len(out) == len(cores) else None


def _busy_cores(cores: list[int], sample_s: float) -> float | None:
    """Cores' worth of busy time on ``cores`` over the next ``sample_s`` seconds."""
    import time

    before = _cpu_times(cores)
    if before is None:
        return None
    time.sleep(sample_s)
    after = _cpu_times(cores)
    if after is None:
        return None
    busy = 0.0
    for c in cores:
        d_busy, d_total = after[c][0] - before[c][0], after[c][1] - before[c][1]
        busy += d_busy / d_total if d_total > 0 else 0.0
    return busy


def pin_process(cores: list[int]) -> None:
    """Pin this process (and the threads it starts from now on) to ``cores`` for good; a
    no-op where the platform has no affinity mask."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)


@contextlib.contextmanager
def pinned(cores: list[int] | None) -> Iterator[list[int] | None]:
    """Pin the calling thread to ``cores`` and restore its previous mask afterwards.

    Args:
        cores: The cores to run on; ``None`` leaves the mask as it is.

    Yields:
        The cores the thread runs on inside the block (sorted), or ``None`` where the platform
        has no affinity mask and ``cores`` is ``None``.

    Raises:
        MeasurementError: the platform cannot pin, ``cores`` is empty, or the kernel refuses
            them (cores outside this process's cpuset); the message names the usable cores.
    """
    if not hasattr(os, "sched_getaffinity"):
        if cores is not None:
            raise MeasurementError(
                f"Cannot pin to cores {cores}: os.sched_setaffinity is not available on "
                f"{platform.system()}; pass cores=None"
            )
        yield None
        return
    previous = os.sched_getaffinity(0)
    if cores is None:
        yield sorted(previous)
        return
    if not cores:
        raise MeasurementError("Cannot pin to an empty list of cores; pass cores=None or some")
    try:
        # May widen the mask (a worker pinned to one core measuring an all-core profile):
        # the kernel refuses only cores outside the process's cpuset.
        os.sched_setaffinity(0, set(cores))
    except OSError as e:
        raise MeasurementError(
            f"Cannot pin to cores {cores}: {e.strerror}; this process may use cores "
            f"{sorted(previous)}; pass cores this machine has"
        ) from None
    try:
        yield sorted(set(cores))
    finally:
        os.sched_setaffinity(0, previous)
