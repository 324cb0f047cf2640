"""The latency measurement protocol: warm up, sample until the median is known, report spread.

Each sample is one call of the profile's runtime (:mod:`paretoforge.kernels.runtime`) on one
batch of real task inputs in the profile's shape (:mod:`paretoforge.evaluators.inputs`), timed
from launch to results ready: ``perf_counter_ns`` on the CPU, around a synchronised call for
ONNX Runtime on CUDA, CUDA events for torch on CUDA. Sampling stops when the distribution-free
95% confidence interval of the median is within ``target_rel_ci`` of it, or at the time / run
cap; the result says which.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import platform
import socket
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from paretoforge._sysinfo import cpu_model, machine_identity
from paretoforge._system import available_cores, pinned
from paretoforge.exceptions import MeasurementError

if TYPE_CHECKING:
    import numpy as np

    from paretoforge.hw_profiles import HardwareProfile
    from paretoforge.kernels.runtime import Runtime

__all__ = ["Measurement", "measure_latency", "median_ci"]


class Measurement(BaseModel):
    """Latency of one candidate on one hardware profile, with the spread and the environment.

    Example:
        >>> m = Measurement(profile="cpu-1t", batch_size=1, p50_ms=1.0, p90_ms=1.1, p99_ms=1.3,
        ...                 mean_ms=1.02, std_ms=0.05, min_ms=0.95, runs=200, warmup=20,
        ...                 ci95_rel=0.01, converged=True, stop_reason="converged")
        >>> Measurement.model_validate_json(m.model_dump_json()) == m
        True
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str = Field(description="Name of the hardware profile measured.")
    batch_size: int = Field(description="Samples per inference call.")
    p50_ms: float = Field(description="Median latency of one call, milliseconds.")
    p90_ms: float = Field(description="90th percentile latency, milliseconds.")
    p99_ms: float = Field(description="99th percentile latency, milliseconds.")
    mean_ms: float = Field(description="Mean latency, milliseconds.")
    std_ms: float = Field(description="Standard deviation of latency, milliseconds.")
    min_ms: float = Field(description="Fastest call, milliseconds.")
    runs: int = Field(description="Timed calls (after warm-up).")
    warmup: int = Field(description="Untimed warm-up calls.")
    ci95_rel: float = Field(
        description="Half-width of the 95% confidence interval of the median, over the median."
    )
    converged: bool = Field(description="Whether ci95_rel reached the target before a cap.")
    stop_reason: Literal["converged", "max_runs", "max_seconds", "predicted"] = Field(
        description="Why sampling stopped."
    )
    predicted: bool = Field(
        default=False, description="True when a latency predictor produced this, not a run."
    )
    env: dict[str, Any] = Field(
        default_factory=dict,
        description="Where it was measured: CPU, cores, affinity, threads, runtime, node.",
    )


def median_ci(sorted_samples: Sequence[float], z: float = 1.959964) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from order statistics.

    The number of samples below the true median is Binomial(n, 1/2); with the normal
    approximation, the interval between order statistics ``n/2 -+ z*sqrt(n)/2`` covers the
    median with probability ~95% whatever the latency distribution (skewed, multi-modal).

    Args:
        sorted_samples: Samples in ascending order (at least 1).
        z: Normal quantile of the confidence level.

    Returns:
        ``(low, high)``.

    Example:
        >>> median_ci(list(range(100)))
        (39, 60)
    """
    n = len(sorted_samples)
    if n == 0:
        raise ValueError("median_ci needs at least one sample")
    half = z * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half) - 1)  # 1-based rank -> 0-based index
    hi = min(n - 1, math.ceil(n / 2 + half))
    return sorted_samples[lo], sorted_samples[hi]


def _median_ci_rel(samples: list[int]) -> float:
    ordered = sorted(samples)
    n = len(ordered)
    lo, hi = median_ci(ordered)
    med = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    return (hi - lo) / 2 / max(med, 1)  # a zero median only happens below timer resolution


def _environment(
    runtime: Runtime,
    profile: HardwareProfile,
    affinity: list[int] | None,
    threads: int,
    feed_info: dict[str, Any],
) -> dict[str, Any]:
    env: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "machine": machine_identity(),  # ISA features: which kernels the numbers came from
        "logical_cores": os.cpu_count(),
        "affinity": affinity,
        "intra_op_threads": threads,
        "inter_op_threads": profile.inter_op_threads,
        "allow_spinning": profile.allow_spinning,
        "graph_optimization": profile.graph_optimization,
        "device": profile.device,
        **runtime.describe(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
    }
    if feed_info.get("sequence_inputs"):
        env["inputs"] = feed_info
    with contextlib.suppress(OSError):
        env["loadavg_1m"] = os.getloadavg()[0]  # a busy node shows here, next to the spread
    ray = sys.modules.get("ray")  # never import Ray here; only ask it if the caller runs in it
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        with contextlib.suppress(Exception):
            env["ray_node_id"] = ray.get_runtime_context().get_node_id()
    return env


def measure_latency(
    model: str | os.PathLike[str] | Runtime | Any,
    profile: HardwareProfile,
    inputs: dict[str, np.ndarray],
    *,
    warmup: int = 20,
    min_runs: int = 50,
    max_runs: int = 2000,
    max_seconds: float = 3.0,
    target_rel_ci: float = 0.02,
    cores: list[int] | None = None,
    seed: int = 0,
    precision: str = "fp32",
) -> Measurement:
    """Measure the latency of a candidate as ``profile`` runs it.

    Args:
        model: The candidate: an ONNX file or artifact directory (loaded with
            :func:`paretoforge.kernels.runtime.load_runtime` for the profile's runtime), a
            ``torch.nn.Module`` for torch profiles, or an already loaded
            :class:`~paretoforge.kernels.runtime.Runtime` (left open).
        profile: Hardware profile: runtime, provider, threads, batch size, sequence shape.
        inputs: Input name -> real task samples, samples on axis 0; batches of
            ``profile.batch_size`` in the profile's sequence shape are cut from them
            (:func:`paretoforge.evaluators.inputs.make_feeds`).
        warmup: Untimed calls first (allocations, caches, thread pool start-up, graph capture).
        min_runs: Timed calls always made, even past ``max_seconds``.
        max_runs: Stop after this many timed calls.
        max_seconds: Stop once timed calls have taken this long (after ``min_runs``).
        target_rel_ci: Stop once the 95% CI half-width of the median is within this fraction
            of the median.
        cores: Pin the measurement (and the runtime's threads, which inherit the mask) to these
            cores; the previous affinity is restored afterwards. Default: current affinity.
        seed: Which samples make the batches when lengths follow the task's distribution.
        precision: The candidate's precision (torch profiles build it; see
            :func:`~paretoforge.kernels.runtime.load_runtime`).

    Returns:
        A :class:`Measurement`; ``converged`` says whether the CI target was met. Each call is
        timed from launch to results ready: ``perf_counter_ns`` on the CPU, around a
        synchronised call for ONNX Runtime on CUDA, CUDA events for torch on CUDA
        (``env["timer"]``).

    Raises:
        MeasurementError: bad inputs (named), bad arguments, or the runtime failed.
        PlacementError: the profile needs more threads than the cores available.
    """
    import numpy as np

    from paretoforge.evaluators.inputs import make_feeds
    from paretoforge.kernels.runtime import Runtime, load_runtime

    if warmup < 0 or min_runs < 1 or max_runs < min_runs or max_seconds <= 0:
        raise MeasurementError(
            f"Need warmup >= 0, 1 <= min_runs <= max_runs and max_seconds > 0; got "
            f"warmup={warmup}, min_runs={min_runs}, max_runs={max_runs}, max_seconds={max_seconds}"
        )
    if not 0 < target_rel_ci < 1:
        raise MeasurementError(f"target_rel_ci must be in (0, 1), got {target_rel_ci}")

    with pinned(cores) as affinity:
        n_cores = len(affinity) if affinity else available_cores()
        threads = profile.threads_for(n_cores)
        owned = not isinstance(model, Runtime)
        runtime = (load_runtime(model, profile, n_cores=n_cores, precision=precision) if owned
                   else model)
        try:
            runtime.validate(inputs, profile.batch_size)
            feeds, feed_info = make_feeds(inputs, profile, seed=seed)
            staged = [runtime.stage(f) for f in feeds]
            samples, ci_rel, stop = _sample(
                runtime, staged, warmup=warmup, min_runs=min_runs, max_runs=max_runs,
                max_seconds=max_seconds, target_rel_ci=target_rel_ci,
            )
            env = _environment(runtime, profile, affinity, threads, feed_info)
        finally:
            if owned:
                runtime.close()

    # The loop always computes ci_rel before it stops, so it is finite here.
    ms = np.asarray(samples, dtype=np.float64) / 1e6
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return Measurement(
        profile=profile.name,
        batch_size=profile.batch_size,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        mean_ms=float(ms.mean()),
        std_ms=float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
        min_ms=float(ms.min()),
        runs=len(samples),
        warmup=warmup,
        ci95_rel=float(ci_rel),
        converged=ci_rel <= target_rel_ci,
        stop_reason=stop,
        env=env,
    )


def _sample(
    runtime: Runtime,
    staged: list[Any],
    *,
    warmup: int,
    min_runs: int,
    max_runs: int,
    max_seconds: float,
    target_rel_ci: float,
) -> tuple[list[int], float, Literal["converged", "max_runs", "max_seconds"]]:
    """Warm up, then time calls until the median's CI is narrow or a cap is hit."""
    call = runtime.timed_call
    n_feeds = len(staged)
    for i in range(warmup):
        call(staged[i % n_feeds])
    samples: list[int] = []
    ci_rel = math.inf
    stop: Literal["converged", "max_runs", "max_seconds"] = "max_runs"
    # Checks sort every sample so far, and the call after a check runs with colder caches:
    # check on a geometric schedule so both stay a small share of the samples.
    next_check = min_runs
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a timed call is noise from us, not the model
    try:
        t_start = time.perf_counter()
        while len(samples) < max_runs:
            samples.append(call(staged[len(samples) % n_feeds]))
            n = len(samples)
            if n < min_runs:
                continue
            out_of_time = time.perf_counter() - t_start >= max_seconds
            if n >= next_check or n == max_runs or out_of_time:
                next_check = max(n + 10, int(n * 1.1))
                ci_rel = _median_ci_rel(samples)
                if ci_rel <= target_rel_ci:
                    stop = "converged"
                    break
                if out_of_time:
                    stop = "max_seconds"
                    break
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples, ci_rel, stop
