"""paretoforge._system: the cores this process may use, and pinning that always restores."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

import pytest

from paretoforge._system import available_cores, idle_cores, pinned, usable_cores
from paretoforge.exceptions import MeasurementError

needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"),
                                    reason="needs sched_setaffinity")


def test_usable_cores_are_the_affinity_mask() -> None:
    cores = usable_cores()
    assert cores == sorted(cores) and available_cores() == len(cores) >= 1
    if hasattr(os, "sched_getaffinity"):
        assert set(cores) == os.sched_getaffinity(0)


@needs_affinity
def test_pinned_pins_and_restores() -> None:
    before = os.sched_getaffinity(0)
    core = max(before)
    with pinned([core]) as inside:
        assert inside == [core] and usable_cores() == [core] and available_cores() == 1
    assert os.sched_getaffinity(0) == before
    with pinned(None) as inside:
        assert inside == sorted(before)
    assert os.sched_getaffinity(0) == before


@needs_affinity
def test_pinned_restores_after_an_error() -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(RuntimeError), pinned([min(before)]):
        raise RuntimeError("boom")
    assert os.sched_getaffinity(0) == before


@needs_affinity
@pytest.mark.parametrize("cores", [[], [10_000]])
def test_pinned_refuses_cores_it_cannot_use(cores: list[int]) -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(MeasurementError, match="Cannot pin"), pinned(cores):
        pass
    assert os.sched_getaffinity(0) == before


def test_machine_identity_names_the_isa_and_tells_machines_apart() -> None:
    from paretoforge._sysinfo import isa_features, machine_identity

    ident = machine_identity()
    assert ident["isa"] == isa_features() and ident["isa"] == sorted(ident["isa"])
    assert len(str(ident["fingerprint"])) == 12
    if platform.machine() == "x86_64":  # every x86-64 CPU ONNX Runtime supports has SSE4.2
        assert "sse4_2" in ident["isa"]


@pytest.mark.skipif(not os.path.exists("/proc/stat") or available_cores() < 2,
                    reason="needs /proc/stat and two usable cores")
def test_idle_cores_sees_a_busy_core_at_once() -> None:
    # A busy loop started a moment ago: the 1-minute load average has barely moved, the cores'
    # busy time in /proc/stat has (the old rule trained on a busy core's thread, or on one
    # thread a minute after the machine was busy).
    core = max(usable_cores())
    hog = subprocess.Popen([sys.executable, "-c", "import os, time\n"
                            f"os.sched_setaffinity(0, {{{core}}})\n"
                            "end = time.time() + 10\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.5)
        assert 1 <= idle_cores() <= available_cores() - 1
    finally:
        hog.kill()
        hog.wait()
