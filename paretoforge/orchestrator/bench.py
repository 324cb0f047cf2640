"""Measurement benches: a profile bound to a Ray resource is measured on a node that carries it.

A worker measures a candidate on its own node whenever it can: profiles that run on any node
(``cpu``, ``cpu-1t``), and resource-bound profiles when its node carries the resource. For the
others it sends the ONNX bytes and the latency samples to a :class:`Bench` on a node that does.

The driver starts one bench per (Ray resource, node carrying it), pinned to the node, asking
for the resource as the profiles' :meth:`~paretoforge.hw_profiles.HardwareProfile.ray_options`
say (one unit: one measurement slot per node) with ``max_concurrency=1``, so two measurements
never share the hardware. Profiles bound to the same resource share the node's bench: they
describe the same hardware, and a second actor asking for the node's only unit would never be
placed.

A bench reserves no CPU (``num_cpus=0``). It measures while holding its node's core gate
exclusively, so no build runs beside it and no worker measures on its own core meanwhile: the
cores are borrowed from the builders for the measurement, as an all-core ``cpu`` measurement
borrows them. A CPU reserved for a mostly idle actor would take a worker's place on every node
that carries the resource, and a measurement-only node (``ray start --num-cpus 0 --resources
'{"hw:edge": 1}'``, so that no worker builds on the board) could not host its bench at all.

:func:`measure_profile` is the measurement itself (latency protocol + placement report + the
measuring node), used by the worker and the bench alike.

Example:
    >>> from paretoforge.hw_profiles import HardwareProfile
    >>> p = HardwareProfile(name="edge-1t", device="cpu", intra_op_threads=1)
    >>> bench = Bench([p.model_dump(mode="json")])  # no Ray: a local gate
    >>> bench.ping()["profiles"]
    ['edge-1t']
    >>> bench.measure({"model.onnx": onnx_bytes}, "edge-1t", samples)["env"]["node_id"]
    ... # doctest: +SKIP
    'local-myhost'
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paretoforge._system import usable_cores
from paretoforge.exceptions import MeasurementError
from paretoforge.hw_profiles import HardwareProfile
from paretoforge.orchestrator.gate import GateClient, LocalGate

__all__ = ["Bench", "BenchRef", "current_node_id", "measure_profile", "start_benches",
           "stop_benches"]

BENCH_START_TIMEOUT_S = 120.0  # a bench that does not answer by then: its resource is taken


def current_node_id() -> str:
    """The Ray node this process runs on, or ``local-<hostname>`` outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return str(ray.get_runtime_context().get_node_id())
    except Exception:  # not inside Ray: a local id
        pass
    return f"local-{socket.gethostname()}"


def measure_profile(onnx_path: Path, profile: HardwareProfile, inputs: dict[str, Any], *,
                    cores: list[int], node_id: str, precision: str = "fp32",
                    reference: Path | None = None,
                    hold: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
                    settings: dict[str, Any] | None = None,
                    decode_past: int | None = None,
                    placements: dict[tuple[str, str, int], dict[str, Any]] | None = None,
                    runtime: Any = None) -> dict[str, Any]:
    """Latency of ``onnx_path`` on ``profile`` pinned to ``cores``, with its placement report.

    ``hold`` (e.g. the node's gate) is entered around the timed calls only: sessions are made
    and the placement is reported outside it. ``reference`` (the base's artifact directory)
    is timed beside the candidate, round by round. ``settings`` (``rounds``, ``max_rounds``,
    ``max_seconds``, ``min_runs``) override the profile's protocol, e.g. for a screening
    measurement.
    ``decode_past``: time one decode step of a KV-cache decoder graph after that many cached
    tokens (its placement is the prefill's, reported with that measurement, so none here).
    ``placements``: the reports made so far, by graph structure
    (:func:`~paretoforge.kernels.runtime.graph_structure_key`), profile and core count: a
    graph of a structure already reported gets a copy of that report, marked
    ``"same_structure_as_earlier": True``, instead of a profiled run of its own (a one-shot
    trial's screening: sub-networks that keep the same layers place their nodes alike).
    ``runtime``: an open :class:`~paretoforge.kernels.runtime.Runtime` of ``onnx_path`` for
    ``profile``, timed instead of fresh sessions (left open; one round's worth, a screening).

    Returns:
        The :class:`~paretoforge.evaluators.latency.Measurement` as JSON, ``env.node_id`` set
        to ``node_id``, ``cost_s.placement_s`` added, plus ``"placement"`` (nodes per
        execution provider, fallbacks, unfused Q/DQ nodes).
    """
    import time

    from paretoforge.evaluators.latency import measure_latency
    from paretoforge.kernels.runtime import graph_structure_key, placement_report

    m = measure_latency(onnx_path if runtime is None else runtime, profile, inputs,
                        cores=cores, precision=precision,
                        reference=reference, hold=hold, decode_past=decode_past,
                        **_protocol(settings))
    t0 = time.perf_counter()
    if decode_past is not None:
        placement: dict[str, Any] = {}
    elif placements is None or profile.runtime != "onnxruntime":
        placement = placement_report(onnx_path, profile, inputs, cores=cores)
    else:
        key = (graph_structure_key(onnx_path), profile.name, len(cores))
        if key in placements:
            placement = dict(placements[key], same_structure_as_earlier=True)
        else:
            placement = placements[key] = placement_report(onnx_path, profile, inputs,
                                                           cores=cores)
    out = m.model_dump(mode="json") if hasattr(m, "model_dump") else dict(vars(m))
    out.setdefault("cost_s", {})["placement_s"] = round(time.perf_counter() - t0, 6)
    out.setdefault("env", {})["node_id"] = node_id
    out["placement"] = placement
    return out


_PROTOCOL_KEYS = frozenset({"rounds", "max_rounds", "max_seconds", "min_runs"})


def _protocol(settings: dict[str, Any] | None) -> dict[str, Any]:
    """The measurement-protocol overrides in ``settings`` (only those keys, nothing else)."""
    unknown = set(settings or {}) - _PROTOCOL_KEYS
    if unknown:
        raise MeasurementError(f"unknown measurement settings {sorted(unknown)}; "
                               f"known: {sorted(_PROTOCOL_KEYS)}")
    return dict(settings or {})


@dataclass(frozen=True)
class BenchRef:
    """A bench actor as workers know it: its handle, its node, and its gate holder id."""

    handle: Any
    node_id: str
    holder: str
    resource: str


class Bench:
    """One measurement slot on one node, for the profiles bound to the node's resource.

    Args:
        profiles: The profiles it measures, as JSON (the bench's process need not have them
            registered: user profiles from a spec live in the driver's and workers' registries).
        gates: Node id -> :class:`~paretoforge.orchestrator.gate.CoreGate` handle, as workers
            get them; the bench takes its own node's gate (a local one outside Ray).
        holder: The id it holds the gate under (one per bench, never reused).
    """

    def __init__(self, profiles: Iterable[dict[str, Any]], *, gates: dict[str, Any] | None = None,
                 holder: str = "") -> None:
        self.profiles = {p.name: p for p in map(HardwareProfile.model_validate, profiles)}
        self.node_id = current_node_id()
        handle = (gates or {}).get(self.node_id)
        self.gate: Any = GateClient(handle, holder) if handle is not None else LocalGate()
        self.cores = usable_cores()
        self.measured = 0

    def ping(self) -> dict[str, Any]:
        """Where this bench runs: node, cores, process id, profiles, measurements so far."""
        return {"node_id": self.node_id, "cores": self.cores, "pid": os.getpid(),
                "profiles": sorted(self.profiles), "measured": self.measured}

    def measure(self, files: dict[str, bytes] | bytes, profile_name: str,
                inputs: dict[str, Any], precision: str = "fp32",
                reference: dict[str, bytes] | None = None,
                settings: dict[str, Any] | None = None,
                decode_past: int | None = None) -> dict[str, Any]:
        """Measure a candidate on ``profile_name`` with the worker's samples.

        ``files`` are the candidate's artifact files by name: ``model.onnx`` for ONNX Runtime
        profiles, plus ``config.json`` and ``model.safetensors`` for torch profiles (which load
        the PyTorch model from them); plain bytes are ``model.onnx``. ``reference`` holds the
        same files of the base's artifact, timed beside the candidate round by round (the
        worker puts them in Ray's object store once, so a node receives them once).
        ``decode_past``: a decode step of a decoder graph (see :func:`measure_profile`).

        Returns:
            What :func:`measure_profile` returns; ``env.node_id`` is this bench's node.

        Raises:
            MeasurementError: the bench does not serve the profile, or the runtime failed.
            PlacementError: the profile needs more threads than the node has cores.
        """
        profile = self.profiles.get(profile_name)
        if profile is None:
            raise MeasurementError(
                f"bench on node {self.node_id[:12]} measures {sorted(self.profiles)}, not "
                f"{profile_name!r}"
            )
        # A profile with fewer threads than cores runs on the first ones; nothing else runs on
        # the node while the gate is held, so which ones does not matter, only that it is fixed.
        n = profile.intra_op_threads
        cores = self.cores if n is None or n > len(self.cores) else self.cores[:n]
        with tempfile.TemporaryDirectory(prefix="pf-bench-") as d:
            if isinstance(files, bytes):
                files = {"model.onnx": files}
            _write_files(Path(d) / "candidate", files)
            path = Path(d) / "candidate" / "model.onnx"
            ref = None
            if reference:
                ref = Path(d) / "reference"
                _write_files(ref, reference)
            # The gate is held around the timed calls only, not the sessions or placement.
            out = measure_profile(path, profile, inputs, cores=cores, node_id=self.node_id,
                                  precision=precision, reference=ref, hold=self.gate.exclusive,
                                  settings=settings, decode_past=decode_past)
        self.measured += 1
        return out


def _write_files(directory: Path, files: dict[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if Path(name).name != name:  # a bare file name, never a path
            raise MeasurementError(f"bench: bad artifact file name {name!r}")
        (directory / name).write_bytes(data)


def start_benches(profiles: list[HardwareProfile], gates: dict[str, Any], *,
                  timeout_s: float = BENCH_START_TIMEOUT_S) -> dict[str, list[BenchRef]]:
    """Start one :class:`Bench` per (resource, alive node carrying a unit of it); wait for them.

    Profiles without a resource, or bound to Ray's own ``CPU``, need none. ``GPU``-bound
    profiles get a bench per GPU node (it asks Ray for the GPU, which Ray hides otherwise).

    Returns:
        Profile name -> its benches (every bench of the profile's resource).

    Raises:
        PlacementError: no alive node carries a whole unit of a profile's resource, or a bench
            did not start within ``timeout_s`` (something else holds the resource).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from paretoforge.exceptions import PlacementError

    by_resource: dict[str, list[HardwareProfile]] = {}
    for p in profiles:
        if p.resource and p.resource != "CPU":
            by_resource.setdefault(p.resource, []).append(p)
    alive = [n for n in ray.nodes() if n.get("Alive")]
    plan = []  # every group checked before any bench starts: a refusal leaves nothing behind
    for resource, group in sorted(by_resource.items()):
        opts: dict[str, Any] = {}
        for p in group:  # one slot serves them all: ask for what the most demanding one asks
            for k, v in p.ray_options().items():
                opts[k] = {**opts.get(k, {}), **v} if isinstance(v, dict) else max(
                    opts.get(k, 0), v)
        gpus = float(opts.get("num_gpus", 0))
        nodes = [n["NodeID"] for n in alive if float(n["Resources"].get(resource, 0)) >= 1
                 and float(n["Resources"].get("GPU", 0)) >= gpus]
        if not nodes:
            need = (f"a whole unit of Ray resource {resource!r}"
                    + (" and a GPU" if gpus and resource != "GPU" else ""))
            start = ("--num-gpus 1" if resource == "GPU" else
                     f"--resources '{{\"{resource}\": 1}}'" + (" --num-gpus 1" if gpus else ""))
            raise PlacementError(
                f"profiles {[p.name for p in group]} need a node with {need} and no alive node "
                f"has one; start one with `ray start --address ... {start}` or drop the profiles"
            )
        plan.append((resource, group, opts, nodes))
    cls = ray.remote(num_cpus=0, max_concurrency=1, max_restarts=0, max_task_retries=0)(Bench)
    out: dict[str, list[BenchRef]] = {}
    pings = {}
    for resource, group, opts, nodes in plan:
        refs = []
        for nid in nodes:
            holder = f"bench:{resource}:{nid[:12]}"
            handle = cls.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=nid, soft=False),
                **opts,
            ).remote([p.model_dump(mode="json") for p in group], gates=gates, holder=holder)
            refs.append(BenchRef(handle=handle, node_id=nid, holder=holder, resource=resource))
            pings[handle.ping.remote()] = (resource, nid)
        for p in group:
            out[p.name] = refs
    if pings:
        ready, pending = ray.wait(list(pings), num_returns=len(pings), timeout=timeout_s)
        problem = None
        for ref in ready:
            try:
                ray.get(ref)
            except Exception as e:  # the bench could not start (constructor error, node lost)
                resource, nid = pings[ref]
                problem = (f"the measurement bench for Ray resource {resource!r} on node "
                           f"{nid[:12]} failed to start: {type(e).__name__}: "
                           f"{(str(e).strip().splitlines() or [''])[0][:300]}")
                break
        if problem is None and pending:
            resource, nid = pings[pending[0]]
            problem = (f"the measurement bench for Ray resource {resource!r} on node {nid[:12]} "
                       f"did not start within {timeout_s:.0f}s; something else holds the node's "
                       f"{resource!r} unit (`ray status`), or the node cannot start actors")
        if problem is not None:
            stop_benches(out)
            raise PlacementError(problem)
    return out


def stop_benches(benches: dict[str, list[BenchRef]]) -> None:
    """Kill every bench (each once, though profiles share them)."""
    import ray

    seen = set()
    for refs in benches.values():
        for b in refs:
            if b.holder not in seen:
                seen.add(b.holder)
                try:
                    ray.kill(b.handle, no_restart=True)
                except Exception:  # already gone with its node
                    pass
