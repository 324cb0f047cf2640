"""What each node of a cluster offers, and which hardware profiles the cluster can serve.

``paretoforge doctor`` runs :func:`probe_node` on every alive node (a Ray task pinned to the
node) and prints :func:`format_doctor`: each node's CPU, instruction-set features and
calibration (:func:`paretoforge._sysinfo.machine_identity`), runtimes and resources, then which
profiles it can serve. :func:`served_profiles` is the cheap check the driver does before a
search: a profile bound to a Ray resource is served only when a node carries it;
:func:`node_machines` is the per-node identity the driver checks ``requires`` and predictor
transfers against.

Cheap to import: Ray, torch and onnxruntime are imported inside the functions.

Example:
    >>> served_profiles({"CPU": 2.0})["cpu-1t"], served_profiles({"CPU": 2.0})["gpu-fp16"]
    (True, False)
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from paretoforge._sysinfo import cpu_model, machine_identity
from paretoforge._system import available_cores
from paretoforge.hw_profiles._builtin import PROFILES
from paretoforge.hw_profiles._profile import HardwareProfile

__all__ = ["doctor_report", "format_doctor", "format_machine", "node_machines", "probe_node",
           "profile_problems", "served_profiles"]


def served_profiles(
    cluster_resources: Mapping[str, float], profiles: Iterable[str] | None = None
) -> dict[str, bool]:
    """Which profiles a cluster with ``cluster_resources`` can measure.

    Args:
        cluster_resources: ``ray.cluster_resources()`` (or one node's resources).
        profiles: Profile names to check; default: every registered profile.

    Returns:
        Profile name -> whether some node carries its resource (``resource: null`` profiles
        run on any node, so they are always served).
    """
    names = list(profiles) if profiles is not None else PROFILES.names()
    out = {}
    for name in names:
        p = PROFILES.get(name)
        out[name] = p.resource is None or float(cluster_resources.get(p.resource, 0)) > 0
    return out


def _nvidia_smi() -> list[str] | None:
    """GPUs the driver lists (``nvidia-smi -L``), whatever CUDA_VISIBLE_DEVICES says."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def probe_node() -> dict[str, Any]:
    """Describe the machine this runs on: CPU, memory, runtimes, GPUs, Ray resources.

    Every field that cannot be read is reported as an ``{"error": ...}`` rather than raising,
    so one broken package does not hide the rest of the node.

    Returns:
        ``{"hostname", "machine", "platform", "python", "cpu_model", "logical_cores",
        "usable_cores", "identity" (:func:`~paretoforge._sysinfo.machine_identity`: ISA
        features, physical cores, fingerprint, calibration), "memory_gb", "loadavg",
        "onnxruntime": {"version", "providers"},
        "torch": {"version", "cuda_available", "cuda_version", "devices"},
        "cuda_visible_devices", "nvidia_smi", "ray": {"node_id", "resources"}}``.
        Inside a Ray task that asked for no GPU, Ray empties ``CUDA_VISIBLE_DEVICES``, so
        ``torch.cuda_available`` is False there; ``nvidia_smi`` still lists the GPUs.
    """
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": available_cores(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "nvidia_smi": _nvidia_smi(),
        "identity": machine_identity(),
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 1e9, 1)
    except Exception as err:  # pragma: no cover - psutil is a dependency
        info["memory_gb"] = {"error": str(err)}
    try:
        import onnxruntime as ort

        info["onnxruntime"] = {"version": ort.__version__,
                               "providers": list(ort.get_available_providers())}
    except Exception as err:
        info["onnxruntime"] = {"error": f"{type(err).__name__}: {err}"}
    try:
        import torch

        cuda = bool(torch.cuda.is_available())
        info["torch"] = {
            "version": torch.__version__,
            "cuda_available": cuda,
            "cuda_version": torch.version.cuda,
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if cuda else [],
        }
    except Exception as err:
        info["torch"] = {"error": f"{type(err).__name__}: {err}"}
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        try:
            node_id = ray.get_runtime_context().get_node_id()
            res = next((n["Resources"] for n in ray.nodes() if n["NodeID"] == node_id), {})
            info["ray"] = {"node_id": node_id, "resources": dict(res)}
        except Exception as err:
            info["ray"] = {"error": f"{type(err).__name__}: {err}"}
    return info


def profile_problems(profile: HardwareProfile, probe: Mapping[str, Any]) -> list[str]:
    """Why a node that carries ``profile``'s resource still cannot measure it (empty: it can).

    Example:
        >>> from paretoforge.hw_profiles import get_profile
        >>> probe = {"onnxruntime": {"providers": ["CPUExecutionProvider"]}, "nvidia_smi": None,
        ...          "torch": {"cuda_available": False}, "machine": "x86_64"}
        >>> profile_problems(get_profile("cpu-1t"), probe)
        []
        >>> profile_problems(get_profile("gpu-fp16"), probe)[0][:40]
        'onnxruntime lacks CUDAExecutionProvider '
    """
    problems = []
    missing = profile.missing_features((probe.get("identity") or {}).get("isa"))
    if missing and probe.get("identity"):
        problems.append(f"CPU lacks {', '.join(missing)} (the profile requires "
                        f"{', '.join(profile.requires)})")
    if profile.runtime == "onnxruntime":
        ort_info = probe.get("onnxruntime") or {}
        providers = ort_info.get("providers")
        if providers is None:
            problems.append(f"onnxruntime does not import: {ort_info.get('error')}")
        elif profile.provider not in providers:
            hint = "pip install onnxruntime-gpu" if profile.on_gpu else "install a build with it"
            problems.append(
                f"onnxruntime lacks {profile.provider} (has {', '.join(providers)}); {hint}"
            )
    elif "error" in (probe.get("torch") or {}):
        problems.append(f"torch does not import: {probe['torch']['error']}")
    if profile.on_gpu:
        smi = probe.get("nvidia_smi")
        torch_cuda = (probe.get("torch") or {}).get("cuda_available")
        if not smi and not torch_cuda:
            problems.append("no NVIDIA GPU visible (nvidia-smi lists none, torch sees none)")
    if profile.name == "edge-arm" and probe.get("machine") not in (None, "aarch64", "arm64"):
        problems.append(f"node is {probe.get('machine')}, not an ARM board")
    if profile.intra_op_threads is not None:
        cores = probe.get("usable_cores") or 0
        if cores and cores < profile.intra_op_threads:
            problems.append(f"needs {profile.intra_op_threads} threads, node has {cores} cores")
    return problems


def doctor_report(address: str | None = None, *, timeout_s: float = 120.0) -> dict[str, Any]:
    """Probe every alive node of the cluster and check every registered profile against it.

    Connects to ``address`` (or ``RAY_ADDRESS``; with neither, starts a local cluster of its
    own, never the one Ray's current-cluster file names) unless Ray is already initialised;
    an address that does not answer raises PlacementError within about 30 s. Runs
    :func:`probe_node` on each alive node as a zero-CPU task pinned with
    ``NodeAffinitySchedulingStrategy``, and disconnects again if it connected.

    Args:
        address: Ray cluster address, e.g. ``"10.0.0.1:6379"`` or ``"auto"``.
        timeout_s: How long to wait for the probes; a node that does not answer in time is
            reported with an error instead of failing the report.

    Returns:
        ``{"ray_version", "cluster_resources", "nodes": [{"node_id", "address", "resources",
        "probe"}], "profiles": {name: {"served", "resource", "nodes", "usable_nodes",
        "problems"}}}``.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    started = False
    if not ray.is_initialized():
        _connect(address)
        started = True
    try:
        alive = [n for n in ray.nodes() if n.get("Alive")]
        probe = ray.remote(num_cpus=0, max_retries=0)(probe_node)
        refs = {
            n["NodeID"]: probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote()
            for n in alive
        }
        ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        nodes = []
        for n in alive:
            try:
                result: dict[str, Any] = ray.get(refs[n["NodeID"]], timeout=0)
            except Exception as err:
                result = {"error": f"probe failed or timed out: {type(err).__name__}: {err}"}
            nodes.append({"node_id": n["NodeID"], "address": n.get("NodeManagerAddress"),
                          "resources": dict(n.get("Resources", {})), "probe": result})
        cluster = dict(ray.cluster_resources())
        version = ray.__version__
    finally:
        if started:
            from paretoforge._ray_auth import stop_local_cluster

            stop_local_cluster()
    served = served_profiles(cluster)
    profiles: dict[str, Any] = {}
    for name in PROFILES.names():
        p = PROFILES.get(name)
        carrying = [n for n in nodes if p.resource is None
                    or float(n["resources"].get(p.resource, 0)) > 0]
        problems = {n["node_id"]: profile_problems(p, n["probe"]) for n in carrying}
        profiles[name] = {
            "served": served[name],
            "resource": p.resource,
            "nodes": [n["node_id"] for n in carrying],
            "usable_nodes": [nid for nid, probs in problems.items() if not probs],
            "problems": {nid: probs for nid, probs in problems.items() if probs},
        }
    return {"ray_version": version, "cluster_resources": cluster, "nodes": nodes,
            "profiles": profiles}


def _connect(address: str | None) -> None:
    from paretoforge._ray_auth import connect_cluster, start_local_cluster

    addr = address or os.environ.get("RAY_ADDRESS")
    if addr:
        connect_cluster(addr)
    else:
        start_local_cluster(num_cpus=available_cores(), object_store_memory=80 * 1024**2)


def node_machines(*, timeout_s: float = 120.0) -> dict[str, dict[str, Any]]:
    """Each alive node's :func:`~paretoforge._sysinfo.machine_identity`, calibration included.

    One zero-CPU Ray task pinned to each node (the first on a node calibrates it, a few hundred
    milliseconds; later ones read the node's cache). Ray must be initialised.

    Returns:
        Node id -> identity; a node that did not answer in ``timeout_s`` maps to
        ``{"error": ...}``.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(machine_identity)
    refs = {n["NodeID"]: task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote() for n in ray.nodes() if n.get("Alive")}
    ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
    out: dict[str, dict[str, Any]] = {}
    for nid, ref in refs.items():
        try:
            out[nid] = dict(ray.get(ref, timeout=0))
        except Exception as err:
            out[nid] = {"error": f"no answer within {timeout_s:g}s: {type(err).__name__}"}
    return out


def format_machine(identity: Mapping[str, Any]) -> str:
    """One line: ISA features, cores and calibration of a machine identity.

    Example:
        >>> format_machine({"isa": ["avx2", "fma"], "physical_cores": 2, "logical_cores": 4,
        ...                 "fingerprint": "ab12", "calibration": {"fp32_gflops": 40.0,
        ...                 "int8_gops": 30.0, "int8_speedup": 0.75}})
        'isa avx2 fma; 2 physical / 4 logical cores; fingerprint ab12; calibration fp32 40 GFLOP/s, int8 30 GOP/s (int8 0.75x fp32)'
    """  # noqa: E501
    if "error" in identity:
        return str(identity["error"])
    cal = identity.get("calibration") or {}
    if "error" in cal:
        cal_text = f"calibration failed: {cal['error']}"
    elif cal:
        cal_text = (f"calibration fp32 {cal.get('fp32_gflops', 0):.3g} GFLOP/s, int8 "
                    f"{cal.get('int8_gops', 0):.3g} GOP/s (int8 {cal.get('int8_speedup', 0):.2f}x"
                    " fp32)")
    else:
        cal_text = "not calibrated"
    return (f"isa {' '.join(identity.get('isa') or []) or '(unknown)'}; "
            f"{identity.get('physical_cores')} physical / {identity.get('logical_cores')} "
            f"logical cores; fingerprint {identity.get('fingerprint')}; {cal_text}")


def format_doctor(report: Mapping[str, Any]) -> str:
    """The report as plain text: one block per node, then one line per profile with the fix.

    Example:
        >>> print(format_doctor({"ray_version": "2", "nodes": [], "profiles": {
        ...     "gpu-fp16": {"served": False, "resource": "GPU", "nodes": [],
        ...                  "usable_nodes": [], "problems": {}}}}))
        ... # doctest: +NORMALIZE_WHITESPACE
        paretoforge doctor: 0 node(s), Ray 2
        profiles:
          gpu-fp16  NOT SERVED  no node carries Ray resource 'GPU'; start a GPU node with
          `ray start --address HEAD:6379 --num-gpus 1`
    """
    lines = [f"paretoforge doctor: {len(report['nodes'])} node(s), Ray {report['ray_version']}"]
    for n in report["nodes"]:
        p = n["probe"]
        lines.append(f"node {n['node_id'][:12]} ({n.get('address')}):")
        if "error" in p:
            lines.append(f"  {p['error']}")
            continue
        mem = p.get("memory_gb")
        lines.append(f"  {p.get('hostname')}  {p.get('machine')}  {p.get('cpu_model')}  "
                     f"{p.get('usable_cores')}/{p.get('logical_cores')} cores  {mem} GB  "
                     f"load {', '.join(f'{x:.2f}' for x in p.get('loadavg') or [])}")
        if p.get("identity"):
            lines.append(f"  {format_machine(p['identity'])}")
        o = p.get("onnxruntime", {})
        lines.append(f"  onnxruntime {o.get('version', '-')}: "
                     f"{', '.join(o.get('providers', [])) or o.get('error')}")
        t = p.get("torch", {})
        cuda = "CUDA " + ", ".join(t["devices"]) if t.get("devices") else "no CUDA visible"
        lines.append(f"  torch {t.get('version', '-')}: {t.get('error', cuda)}")
        if p.get("nvidia_smi"):
            lines.append(f"  nvidia-smi: {'; '.join(p['nvidia_smi'])}")
        custom = {k: v for k, v in n["resources"].items()
                  if not k.startswith(("node:", "memory", "object_store_memory"))}
        lines.append("  ray resources: " + ", ".join(f"{k}={v:g}" for k, v in
                                                     sorted(custom.items())))
    lines.append("profiles:")
    width = max((len(k) for k in report["profiles"]), default=0)
    for name, pr in report["profiles"].items():
        if not pr["served"]:
            res = pr["resource"]
            fix = ("start a GPU node with `ray start --address HEAD:6379 --num-gpus 1`"
                   if res == "GPU" else
                   f"start a node with `ray start --address HEAD:6379 --resources "
                   f"'{{\"{res}\": 1}}'`")
            lines.append(f"  {name:<{width}}  NOT SERVED  no node carries Ray resource "
                         f"{res!r}; {fix}")
        elif not pr["usable_nodes"]:
            why = "; ".join(sorted({x for probs in pr["problems"].values() for x in probs}))
            lines.append(f"  {name:<{width}}  UNUSABLE    {len(pr['nodes'])} node(s) carry it "
                         f"but none can run it: {why}")
        else:
            where = "any node" if pr["resource"] is None else f"resource {pr['resource']!r}"
            lines.append(f"  {name:<{width}}  ok          {len(pr['usable_nodes'])} node(s), "
                         f"{where}")
    return "\n".join(lines)
