"""The core gate (readers-writer) and the non-dominated filter."""

from __future__ import annotations

import random
import threading
import time

from paretoforge.orchestrator.gate import CoreGate, GateClient, LocalGate
from paretoforge.orchestrator.results import non_dominated


def _dominates(a, b, dirs):
    s = [-1 if d == "maximize" else 1 for d in dirs]
    a = [x * k for x, k in zip(a, s, strict=True)]
    b = [x * k for x, k in zip(b, s, strict=True)]
    pairs = list(zip(a, b, strict=True))
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def test_non_dominated_is_exactly_the_front() -> None:
    rng = random.Random(0)
    dirs = ["maximize", "minimize", "minimize"]
    for _ in range(50):
        pts = [tuple(rng.randint(0, 5) for _ in dirs) for _ in range(rng.randint(1, 30))]
        front = set(non_dominated(pts, dirs))
        for i, p in enumerate(pts):
            dominated = any(_dominates(q, p, dirs) for q in pts)
            assert (i in front) == (not dominated)


def test_local_gate_exclusive_excludes_shared() -> None:
    gate = LocalGate()
    events: list[str] = []
    lock = threading.Lock()

    def builder(i: int) -> None:
        for _ in range(5):
            with gate.shared():
                with lock:
                    events.append("s+")
                time.sleep(0.002)
                with lock:
                    events.append("s-")

    def measurer() -> None:
        for _ in range(5):
            with gate.exclusive():
                with lock:
                    events.append("x+")
                time.sleep(0.002)
                with lock:
                    events.append("x-")

    threads = [threading.Thread(target=builder, args=(i,)) for i in range(3)]
    threads.append(threading.Thread(target=measurer))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    readers = 0
    writer = False
    for e in events:
        if e == "s+":
            assert not writer
            readers += 1
        elif e == "s-":
            readers -= 1
        elif e == "x+":
            assert readers == 0 and not writer
            writer = True
        else:
            writer = False
    assert events.count("x+") == 5


def test_ray_gate_actor(ray_cluster) -> None:
    ray = ray_cluster
    gate = ray.remote(num_cpus=0, max_concurrency=16)(CoreGate).remote()
    client = GateClient(gate)
    with client.shared():
        assert ray.get(gate.state.remote())["readers"] == 1
        # a writer waits while a reader holds the gate
        pending = gate.acquire_exclusive.remote()
        ready, _ = ray.wait([pending], timeout=0.3)
        assert not ready
    ray.get(pending)
    assert ray.get(gate.state.remote())["writer"] == 1
    ray.get(gate.release_exclusive.remote())
    with client.exclusive():
        assert ray.get(gate.state.remote())["writer"] == 1


def test_local_gate_build_yields_to_a_waiting_measurement() -> None:
    """A build inside its shared hold lets an exclusive hold through at its yield point, and
    never runs beside it; it keeps its hold when nobody waits."""
    gate = LocalGate()
    assert not gate.yield_to_writers()  # outside a shared hold: nothing to yield
    inside = threading.Event()
    done = threading.Event()
    overlap: list[bool] = []
    writer_in = threading.Event()
    yielded: list[bool] = []

    def build() -> None:
        with gate.shared():
            inside.set()
            while not done.is_set():  # a long build: steps with a yield point each
                yielded.append(gate.yield_to_writers())
                overlap.append(writer_in.is_set())
                time.sleep(0.001)

    t = threading.Thread(target=build)
    t.start()
    inside.wait()
    with gate.exclusive():  # gets in while the build is still inside its shared hold
        writer_in.set()
        time.sleep(0.02)
        writer_in.clear()
    done.set()
    t.join()
    assert any(yielded) and not any(overlap)


def test_core_gate_yield_shared() -> None:
    import asyncio

    async def scenario() -> tuple[bool, bool, dict[str, int]]:
        gate = CoreGate()
        await gate.acquire_shared("b")
        nobody = await gate.yield_shared("b")  # no writer waits: keeps the hold, at once
        writer = asyncio.ensure_future(gate.acquire_exclusive("m"))
        await asyncio.sleep(0.01)
        assert not writer.done()  # the build still holds the gate
        yielding = asyncio.ensure_future(gate.yield_shared("b"))
        await writer  # the build let go: the measurement holds the gate alone
        held = await gate.state()
        await gate.release_exclusive("m")
        return nobody, await yielding, held

    nobody, did, held = asyncio.run(scenario())
    assert not nobody and did
    assert held == {"readers": 0, "writer": 1, "writers_waiting": 0}


def test_workers_use_the_node_gate_only_where_a_hold_can_be_exclusive(ray_cluster,
                                                                      tmp_path) -> None:
    """Where every build and measurement runs on its worker's own cores (cpu-1t, no bench),
    a worker holds a local gate: no round trips to the node's gate actor, four a trial. An
    all-core profile (``cpu``) takes the cores exclusively, so its workers use the node's."""
    from paretoforge.orchestrator.driver import _start_gates
    from paretoforge.orchestrator.worker import Worker
    from paretoforge.pipeline import prepare_cached
    from paretoforge.testing import tiny_spec

    gates = _start_gates()
    try:
        for profiles, node_gate in ((["cpu-1t"], False), (["cpu-1t", "cpu"], True)):
            spec = tiny_spec(profiles=profiles)
            prepared = prepare_cached(spec, log=lambda *_: None)
            worker = Worker(prepared.for_workers(), spec.model_dump(mode="json"),
                            str(tmp_path / profiles[-1]), gates=gates, holder="t", pin=False)
            assert isinstance(worker.gate, GateClient) is node_gate
            assert isinstance(worker.gate, LocalGate) is not node_gate
    finally:
        import ray

        for g in gates.values():
            ray.kill(g, no_restart=True)
