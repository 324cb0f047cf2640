"""Facts about the machine that measurements and probes record: what it is, and how fast.

:func:`machine_identity` says which CPU a number came from (model, instruction-set features,
cores, a fingerprint of the kind of CPU) and carries this node's :func:`calibration`: the
single-core throughput of one fp32 and one int8 GEMM through ONNX Runtime, measured once per
kind of CPU and node (a few hundred milliseconds) and cached under the cache directory. Two
machines that both say "AMD EPYC" can differ six-fold in latency and in whether int8 pays
off at all; their features and calibration tell them apart (:func:`machine_differences`).

Foundation layer: imports nothing of the package but :mod:`paretoforge._system`; ONNX
Runtime, onnx and numpy are imported inside :func:`calibrate`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import socket
import time
from collections.abc import Mapping
from typing import Any

from paretoforge._io import cache_root

__all__ = ["CALIBRATION_FORMAT", "ISA_FEATURES", "calibrate", "calibration", "cpu_model",
           "isa_features", "machine_differences", "machine_identity", "physical_cores"]

# Instruction-set features that change which kernels ONNX Runtime and torch run (int8 GEMMs
# with VNNI / AMX, fp16 with F16C / AVX512-FP16, ARM dot products): two machines that both say
# "AMD EPYC" differ in exactly these. The names are Linux's /proc/cpuinfo flags; a hardware
# profile's `requires` takes them.
ISA_FEATURES = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile",
                "amx_int8", "amx_bf16", "asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve",
                "sve2")
CALIBRATION_FORMAT = "paretoforge-calibration/1"
# One GEMM shape for both precisions: (M, K) x (K, N), a transformer layer's worth of work at
# a small batch. Large enough that the kernel, not the call, is timed.
_M, _K, _N = 64, 512, 512
# The fastest of 15 blocks of about 10 ms each, per precision (about 0.3 s in all): a busy
# neighbour slows some blocks, rarely all of them.
_BLOCKS, _BLOCK_S = 15, 0.01


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (x86 "model name", ARM "Hardware"/"CPU model")."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def isa_features() -> list[str]:
    """The CPU's instruction-set features that matter for inference kernels (sorted), from
    the ``flags`` / ``Features`` line of /proc/cpuinfo; empty where it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("flags", "features")):
                    have = set(line.split(":", 1)[1].split())
                    return sorted(x for x in ISA_FEATURES if x in have)
    except OSError:
        pass
    return []


def physical_cores() -> int | None:
    """Physical cores of the machine (psutil), None where it cannot tell."""
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except Exception:  # pragma: no cover - psutil is a dependency
        return None


@functools.lru_cache(maxsize=1)
def _kind() -> dict[str, Any]:
    """What stays the same for the life of the process: the kind of CPU and its fingerprint."""
    ident: dict[str, Any] = {"cpu_model": cpu_model(), "arch": platform.machine(),
                             "isa": isa_features(), "physical_cores": physical_cores(),
                             "logical_cores": os.cpu_count()}
    blob = f"{ident['cpu_model']}|{ident['arch']}|{','.join(ident['isa'])}"
    ident["fingerprint"] = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return ident


def machine_identity(*, calibrated: bool = True) -> dict[str, Any]:
    """What a measured number came from: CPU model, architecture, ISA features, physical and
    logical cores, a short fingerprint of model, architecture and features (equal
    fingerprints: the same kind of CPU), and this node's :func:`calibration`.

    Args:
        calibrated: Include ``calibration`` (cached per node; the first call on a node runs
            it, a few hundred milliseconds). ``False`` leaves it out.

    Example:
        >>> sorted(machine_identity(calibrated=False))
        ['arch', 'cpu_model', 'fingerprint', 'isa', 'logical_cores', 'physical_cores']
    """
    ident = dict(_kind())
    ident["isa"] = list(ident["isa"])
    if calibrated:
        ident["calibration"] = calibration()
    return ident


def calibrate() -> dict[str, Any]:
    """Measure this core's fp32 and int8 GEMM throughput now (a few hundred milliseconds).

    One ``(64, 512) x (512, 512)`` product through ONNX Runtime on one thread, pinned to one
    usable core: ``MatMul`` in fp32 and ``MatMulInteger`` (uint8 x int8, the kernel dynamic
    int8 models run). Each is the fastest of 15 blocks of about 10 ms, so a busy neighbour
    slows the figure less than a mean would.

    Returns:
        ``{"format", "fp32_gflops", "int8_gops", "int8_speedup", "threads", "onnxruntime",
        "seconds", "measured_at", "hostname"}``; ``int8_speedup`` is int8 over fp32 throughput:
        above 1, int8 pays off on this machine.
    """
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from paretoforge._system import pinned, usable_cores

    t0 = time.perf_counter()

    def graph(op: str, a_type: int, b_type: int, out_type: int) -> bytes:
        nodes = [helper.make_node(op, ["A", "B"], ["Y"])]
        g = helper.make_graph(nodes, op, [
            helper.make_tensor_value_info("A", a_type, [_M, _K]),
            helper.make_tensor_value_info("B", b_type, [_K, _N])],
            [helper.make_tensor_value_info("Y", out_type, [_M, _N])])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        return bytes(model.SerializeToString())

    rng = np.random.default_rng(0)
    cases = {
        "fp32": (graph("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT),
                 {"A": rng.standard_normal((_M, _K), dtype=np.float32),
                  "B": rng.standard_normal((_K, _N), dtype=np.float32)}),
        "int8": (graph("MatMulInteger", TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32),
                 {"A": rng.integers(0, 255, (_M, _K), dtype=np.uint8),
                  "B": rng.integers(-127, 127, (_K, _N), dtype=np.int8)}),
    }
    best: dict[str, float] = {}
    with pinned(usable_cores()[:1]):
        for name, (blob, feed) in cases.items():
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            sess = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
            t = time.perf_counter()
            for _ in range(3):
                sess.run(None, feed)
            calls = max(2, int(_BLOCK_S / max((time.perf_counter() - t) / 3, 1e-6)))
            times = []
            for _ in range(_BLOCKS):
                t = time.perf_counter()
                for _ in range(calls):
                    sess.run(None, feed)
                times.append((time.perf_counter() - t) / calls)
            best[name] = min(times)
    ops = 2.0 * _M * _K * _N
    fp32, int8 = ops / best["fp32"] / 1e9, ops / best["int8"] / 1e9
    return {"format": CALIBRATION_FORMAT, "fp32_gflops": round(fp32, 2),
            "int8_gops": round(int8, 2), "int8_speedup": round(int8 / fp32, 3), "threads": 1,
            "onnxruntime": ort.__version__, "seconds": round(time.perf_counter() - t0, 3),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "hostname": socket.gethostname()}


_calibrated: dict[str, dict[str, Any]] = {}  # this process's: no file read per measurement


def calibration(*, refresh: bool = False) -> dict[str, Any]:
    """This node's calibration (:func:`calibrate`), cached per kind of CPU.

    Kept in memory for the process and in ``<cache>/calibration/<fingerprint>.json`` for the
    node (``$PARETOFORGE_CACHE``, else ``~/.cache/paretoforge``); a cached one from another
    ONNX Runtime version is measured again. Never raises: where it cannot be measured, the
    result is ``{"error": ...}``.

    Args:
        refresh: Measure again and replace the cached one.
    """
    fp = _kind()["fingerprint"]
    if not refresh and fp in _calibrated:
        return dict(_calibrated[fp])
    path = cache_root() / "calibration" / f"{fp}.json"
    try:
        import onnxruntime as ort

        version = ort.__version__
    except Exception as err:
        return {"error": f"onnxruntime does not import: {type(err).__name__}: {err}"}
    cal: dict[str, Any] | None = None
    if not refresh:
        with contextlib.suppress(OSError, ValueError):
            cal = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(cal, dict) and cal.get("format") == CALIBRATION_FORMAT
                and cal.get("onnxruntime") == version):
            cal = None
    if cal is None:
        try:
            cal = calibrate()
        except Exception as err:
            return {"error": f"calibration failed: {type(err).__name__}: {err}"}
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cal), encoding="utf-8")
            os.replace(tmp, path)
    _calibrated[fp] = cal
    return dict(cal)


_CALIBRATED = ("fp32_gflops", "int8_gops", "int8_speedup")


def machine_differences(a: Mapping[str, Any], b: Mapping[str, Any], *,
                        tolerance: float = 0.5) -> list[str]:
    """How machine ``b`` differs from machine ``a`` (two :func:`machine_identity` records).

    Different architectures or ISA features differ; so does a calibrated figure (fp32
    throughput, int8 throughput, int8 speed-up) whose ratio between the two is more than
    ``1 + tolerance`` either way. A figure missing on either side is not compared.

    Args:
        a: The machine numbers came from.
        b: The machine they would be used for.
        tolerance: Allowed relative difference of each calibrated figure (0.5: up to 1.5x).

    Returns:
        One phrase per difference; empty when the two count as the same machine.

    Example:
        >>> a = {"arch": "x86_64", "isa": ["avx2", "avx512_vnni"],
        ...      "calibration": {"fp32_gflops": 40.0, "int8_gops": 90.0, "int8_speedup": 2.25}}
        >>> b = {"arch": "x86_64", "isa": ["avx2"],
        ...      "calibration": {"fp32_gflops": 38.0, "int8_gops": 30.0, "int8_speedup": 0.79}}
        >>> machine_differences(a, b)
        ['lacks avx512_vnni', 'int8_gops 30 vs 90 (3.00x)', 'int8_speedup 0.79 vs 2.25 (2.85x)']
        >>> machine_differences(a, a)
        []
    """
    out = []
    if a.get("arch") and b.get("arch") and a["arch"] != b["arch"]:
        out.append(f"architecture {b['arch']} vs {a['arch']}")
    if a.get("isa") is not None and b.get("isa") is not None:
        fa, fb = set(a["isa"]), set(b["isa"])
        if fa - fb:
            out.append("lacks " + ", ".join(sorted(fa - fb)))
        if fb - fa:
            out.append("has " + ", ".join(sorted(fb - fa)) + " in addition")
    ca, cb = a.get("calibration") or {}, b.get("calibration") or {}
    for key in _CALIBRATED:
        x, y = ca.get(key), cb.get(key)
        if not isinstance(x, int | float) or not isinstance(y, int | float) or x <= 0 or y <= 0:
            continue
        ratio = max(x, y) / min(x, y)
        if ratio > 1 + tolerance:
            out.append(f"{key} {y:.3g} vs {x:.3g} ({ratio:.2f}x)")
    return out
