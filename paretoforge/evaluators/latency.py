"""The latency measurement protocol: independent rounds, each against a fixed reference.

A measurement is several **rounds**, each with fresh sessions of the candidate (and of the
reference, when given): warm up (time-boxed), then time calls -- alternately the candidate's
and the reference's, so that whatever the machine does meanwhile touches both alike -- until
the round's median is known (the distribution-free 95% CI of the median within
``target_rel_ci``) or the round's time is up. Rounds continue until the **between-round
spread** (half the range of the round medians, over their median) meets
``target_rel_spread``, or ``max_rounds``: the spread, not the within-session CI, is what a
re-measurement reproduces, and ``converged`` says whether it met the target.

With a reference (the base model's artifact, on the same profile, core and inputs) each round
also gives the candidate's latency **relative** to it; the median of the per-round ratios,
times one latency of the base for the whole run (:func:`with_base_latency`), is the
drift-free figure a search ranks by: a machine whose speed drifts over an hour slows the
candidate and its reference alike.

Each call is one call of the profile's runtime (:mod:`paretoforge.kernels.runtime`) on one
batch of real task inputs in the profile's shape (:mod:`paretoforge.evaluators.inputs`), timed
from launch to results ready. For a KV-cache decoder graph a call is a prefill of the batch;
with ``decode_past`` it is one decode step instead (one new token per sequence after that many
cached tokens, :func:`~paretoforge.evaluators.inputs.make_decode_feeds`): the per-token
latency of generation, with the candidate and the reference each fed a past in its own cache
layout, timed: ``perf_counter_ns`` on the CPU, around a synchronised call for
ONNX Runtime on CUDA, CUDA events for torch on CUDA.
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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from paretoforge._sysinfo import cpu_model, machine_identity
from paretoforge._system import available_cores, pinned
from paretoforge.exceptions import MeasurementError

if TYPE_CHECKING:
    import numpy as np

    from paretoforge.hw_profiles import HardwareProfile
    from paretoforge.kernels.runtime import Runtime

__all__ = ["Measurement", "measure_latency", "median_ci", "with_base_latency"]


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
    runs: int = Field(description="Timed calls of the candidate (after warm-up), all rounds.")
    warmup: int = Field(description="Untimed warm-up calls per session (the most in a round).")
    ci95_rel: float = Field(
        description=(
            "Half-width of the 95% confidence interval of the median within a session, over "
            "the median (the widest round's); it does not cover reproduction, spread_rel does."
        )
    )
    converged: bool = Field(
        description=(
            "Whether the between-round spread (spread_rel) met the target; with one round, "
            "whether ci95_rel met the within-session target."
        )
    )
    stop_reason: Literal["converged", "max_runs", "max_seconds", "max_rounds", "predicted"] = (
        Field(description="Why sampling stopped.")
    )
    rounds: int = Field(default=1, description="Independent rounds (fresh sessions each).")
    round_p50_ms: list[float] = Field(
        default_factory=list, description="The candidate's median latency in each round, ms."
    )
    spread_rel: float | None = Field(
        default=None,
        description=(
            "Between-round spread: half the range of the round figures over their median; the "
            "figures are the relative latencies when a reference was measured, else the round "
            "medians. None with one round."
        ),
    )
    target_rel_spread: float | None = Field(
        default=None, description="The spread target `converged` refers to (None: one round)."
    )
    ref_p50_ms: float | None = Field(
        default=None, description="The reference's median latency (median of round medians)."
    )
    ref_round_p50_ms: list[float] = Field(
        default_factory=list, description="The reference's median latency in each round, ms."
    )
    rel_p50: float | None = Field(
        default=None,
        description="Candidate / reference latency: the median of the per-round ratios.",
    )
    rel_rounds: list[float] = Field(
        default_factory=list, description="Candidate / reference median latency per round."
    )
    rel_low: float | None = Field(default=None, description="Lowest per-round ratio.")
    rel_high: float | None = Field(default=None, description="Highest per-round ratio.")
    base_p50_ms: float | None = Field(
        default=None,
        description=(
            "The run's one latency of the base model on this profile, which rel_p50 scales "
            "(set by with_base_latency)."
        ),
    )
    drift_free_p50_ms: float | None = Field(
        default=None,
        description="rel_p50 x base_p50_ms: the latency a search ranks by, free of drift.",
    )
    cost_s: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "Wall seconds of the measurement's stages: sessions_s, warmup_s, timed_s, "
            "hold_wait_s (waiting for the caller's hold, e.g. the node's gate), held_s, total_s."
        ),
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
    reference: str | os.PathLike[str] | Runtime | None = None,
    warmup: int = 10,
    warmup_seconds: float | None = 0.05,
    min_runs: int = 20,
    max_runs: int = 2000,
    max_seconds: float = 1.0,
    target_rel_ci: float = 0.02,
    rounds: int | None = None,
    max_rounds: int | None = None,
    target_rel_spread: float | None = None,
    hold: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    cores: list[int] | None = None,
    seed: int = 0,
    precision: str = "fp32",
    decode_past: int | None = None,
) -> Measurement:
    """Measure the latency of a candidate as ``profile`` runs it, in independent rounds.

    Args:
        model: The candidate: an ONNX file or artifact directory (loaded with
            :func:`paretoforge.kernels.runtime.load_runtime` for the profile's runtime, a
            fresh session per round), a ``torch.nn.Module`` for torch profiles, or an already
            loaded :class:`~paretoforge.kernels.runtime.Runtime` (left open). A module or a
            runtime is one session for every round (``env["sessions"]`` says which).
        profile: Hardware profile: runtime, provider, threads, batch size, sequence shape,
            and the round settings (``latency_rounds``, ``latency_max_rounds``,
            ``latency_target_spread``) unless given here.
        inputs: Input name -> real task samples, samples on axis 0; batches of
            ``profile.batch_size`` in the profile's sequence shape are cut from them
            (:func:`paretoforge.evaluators.inputs.make_feeds`).
        reference: An artifact (ONNX file or directory, fp32) timed beside the candidate,
            call for call, in every round on the same inputs: the candidate's latency relative
            to it is recorded (``rel_p50``, ``rel_rounds``) and the spread target applies to it.
            A fresh session per round; or an already loaded
            :class:`~paretoforge.kernels.runtime.Runtime`, made under the same pinning, used by
            every round and left open (a screening measurement's, kept from trial to trial).
        warmup: Untimed calls per session first (allocations, caches, thread pool start-up).
        warmup_seconds: Stop warming a session up after this long (at least one call);
            None: always ``warmup`` calls.
        min_runs: Timed calls per round always made.
        max_runs: Timed calls per round at most.
        max_seconds: Time budget of the timed calls, all rounds together: a round stops
            after its share (``max_seconds / max_rounds``, past ``min_runs``), and no round
            beyond ``rounds`` starts once it is spent.
        target_rel_ci: A round stops once the 95% CI half-width of its median (candidate's
            and reference's) is within this fraction of the median.
        rounds: Rounds always made (default ``profile.latency_rounds``).
        max_rounds: Rounds at most (default ``profile.latency_max_rounds``).
        target_rel_spread: Stop once the between-round spread is within this fraction
            (default ``profile.latency_target_spread``).
        hold: Called once, its context entered around the warm-up and timed calls only
            (sessions are made before, outside it): e.g. the node's exclusive gate.
        cores: Pin the measurement (and the runtime's threads, which inherit the mask) to these
            cores; the previous affinity is restored afterwards. Default: current affinity.
        seed: Which samples make the batches when lengths follow the task's distribution.
        precision: The candidate's precision (torch profiles build it; see
            :func:`~paretoforge.kernels.runtime.load_runtime`); the reference is fp32.
        decode_past: Time one decode step of a KV-cache decoder graph (and of the
            reference, a decoder too) after this many cached tokens, instead of a call on
            ``inputs`` as they are; ``inputs`` give the new tokens. ONNX Runtime profiles only.

    Returns:
        A :class:`Measurement`: percentiles of every timed call of the candidate (``p50_ms``
        is the median of the round medians), the round medians and their spread, and with a
        reference the relative latency per round, its median and range. ``cost_s`` gives the
        wall time of each stage.

    Raises:
        MeasurementError: bad inputs (named), bad arguments, or the runtime failed.
        PlacementError: the profile needs more threads than the cores available.

    Example:
        >>> m = measure_latency("cand.onnx", get_profile("cpu-1t"), samples,
        ...                     reference="base.onnx")  # doctest: +SKIP
        >>> m.rel_p50, m.spread_rel <= m.target_rel_spread == m.converged  # doctest: +SKIP
        (0.41, True)
    """
    import numpy as np

    from paretoforge.evaluators.inputs import make_decode_feeds, make_feeds
    from paretoforge.kernels.runtime import Runtime, load_runtime

    rounds = profile.latency_rounds if rounds is None else rounds
    max_rounds = max(rounds, profile.latency_max_rounds) if max_rounds is None else max_rounds
    target_rel_spread = (profile.latency_target_spread if target_rel_spread is None
                         else target_rel_spread)
    if warmup < 0 or min_runs < 1 or max_runs < min_runs or max_seconds <= 0:
        raise MeasurementError(
            f"Need warmup >= 0, 1 <= min_runs <= max_runs and max_seconds > 0; got "
            f"warmup={warmup}, min_runs={min_runs}, max_runs={max_runs}, max_seconds={max_seconds}"
        )
    if not 0 < target_rel_ci < 1:
        raise MeasurementError(f"target_rel_ci must be in (0, 1), got {target_rel_ci}")
    if not 1 <= rounds <= max_rounds:
        raise MeasurementError(
            f"Need 1 <= rounds <= max_rounds; got rounds={rounds}, max_rounds={max_rounds}"
        )
    if not 0 < target_rel_spread < 1:
        raise MeasurementError(f"target_rel_spread must be in (0, 1), got {target_rel_spread}")
    if decode_past is not None and profile.runtime != "onnxruntime":
        raise MeasurementError(
            f"Profile {profile.name!r} runs {profile.runtime}; a decode step is timed on the "
            "KV-cache ONNX graph, so per-token decode latency needs an onnxruntime profile")

    t_total = time.perf_counter()
    cost = {"sessions_s": 0.0, "warmup_s": 0.0, "timed_s": 0.0, "hold_wait_s": 0.0,
            "held_s": 0.0}
    fresh = isinstance(model, (str, os.PathLike))
    with pinned(cores) as affinity:
        n_cores = len(affinity) if affinity else available_cores()
        threads = profile.threads_for(n_cores)
        shared_rt: Runtime | None = None
        opened: list[Runtime] = []  # closed in reverse: torch runtimes restore thread counts

        def open_round() -> list[Runtime]:
            nonlocal shared_rt
            t0 = time.perf_counter()
            if fresh:
                cand = load_runtime(model, profile, n_cores=n_cores, precision=precision)
                opened.append(cand)
            else:
                if shared_rt is None:
                    shared_rt = (model if isinstance(model, Runtime) else
                                 load_runtime(model, profile, n_cores=n_cores,
                                              precision=precision))
                    if shared_rt is not model:
                        opened.append(shared_rt)
                cand = shared_rt
            pair = [cand]
            if isinstance(reference, Runtime):
                pair.append(reference)
            elif reference is not None:
                ref = load_runtime(reference, profile, n_cores=n_cores)
                opened.append(ref)
                pair.append(ref)
            cost["sessions_s"] += time.perf_counter() - t0
            return pair

        try:
            pairs = [open_round()]
            if decode_past is None:
                for rt in pairs[0]:
                    rt.validate(inputs, profile.batch_size)
                feeds, feed_info = make_feeds(inputs, profile, seed=seed)
            else:  # one step's feeds; each graph gets its past in its own layout
                feeds, feed_info = make_decode_feeds(inputs, profile, past=decode_past)
                for rt in pairs[0]:
                    if getattr(rt, "cache_layout", None) is None:
                        raise MeasurementError(
                            f"{str(getattr(rt, 'path', model))!r} is not a KV-cache decoder "
                            "graph (no past_key_values inputs); a decode step needs one (export "
                            "it with paretoforge.kernels.decoder_export.export_decoder_onnx)")
                    rt.validate(feeds[0], profile.batch_size)
            pairs += [open_round() for _ in range(rounds - 1)]
            per_round_s = max_seconds / max_rounds
            results: list[tuple[list[list[int]], list[float], int]] = []
            stop: str = "max_rounds"
            spread: float | None = None
            t_wait = time.perf_counter()
            with hold() if hold is not None else contextlib.nullcontext():
                t_held = time.perf_counter()
                cost["hold_wait_s"] = t_held - t_wait
                timed_total = 0.0
                for r in range(max_rounds):
                    if r >= len(pairs):
                        if timed_total >= max_seconds:
                            stop = "max_seconds"
                            break
                        pairs.append(open_round())
                    rts = pairs[r]
                    t0 = time.perf_counter()
                    staged = [[rt.stage(f) for f in feeds] for rt in rts]
                    n_warm = _warm_up(rts, staged, warmup, warmup_seconds)
                    t1 = time.perf_counter()
                    samples, ci_rel, rstop = _sample(
                        rts, staged, min_runs=min_runs, max_runs=max_runs,
                        max_seconds=per_round_s if max_rounds > 1 else max_seconds,
                        target_rel_ci=target_rel_ci,
                    )
                    t2 = time.perf_counter()
                    cost["warmup_s"] += t1 - t0
                    cost["timed_s"] += t2 - t1
                    timed_total += t2 - t1
                    results.append((samples, [ci_rel, float(rstop == "converged")], n_warm))
                    if fresh:  # this round's sessions are done: free them now
                        for rt in rts:
                            if rt in opened:  # not a reference the caller keeps
                                rt.close()
                                opened.remove(rt)
                    if max_rounds == 1:
                        stop = rstop
                        break
                    if r + 1 >= max(rounds, 2):
                        spread = _spread(_figures(results, reference is not None))
                        if spread <= target_rel_spread:
                            stop = "converged"
                            break
                cost["held_s"] = time.perf_counter() - t_held
            env = _environment(pairs[0][0], profile, affinity, threads, feed_info)
        finally:
            for rt in reversed(opened):
                rt.close()
    env["sessions"] = "fresh per round" if fresh else "one, reused by every round"
    if reference is not None:
        env["reference"] = str(getattr(reference, "path", reference))
        if isinstance(reference, Runtime):
            env["reference_session"] = "kept, reused across measurements"

    cand_rounds = [np.asarray(res[0][0], dtype=np.float64) / 1e6 for res in results]
    ms = np.concatenate(cand_rounds)
    round_p50 = [float(np.median(x)) for x in cand_rounds]
    ci_rel = max(res[1][0] for res in results)
    single = len(results) == 1 and max_rounds == 1
    out: dict[str, Any] = {}
    if reference is not None:
        ref_p50 = [float(np.median(np.asarray(res[0][1], dtype=np.float64) / 1e6))
                   for res in results]
        rel = [c / max(f, 1e-12) for c, f in zip(round_p50, ref_p50, strict=True)]
        out.update(ref_p50_ms=float(np.median(ref_p50)), ref_round_p50_ms=ref_p50,
                   rel_p50=float(np.median(rel)), rel_rounds=rel, rel_low=min(rel),
                   rel_high=max(rel))
    p90, p99 = (float(v) for v in np.percentile(ms, [90, 99]))
    p50 = float(np.percentile(ms, 50)) if single else float(np.median(round_p50))
    cost["total_s"] = time.perf_counter() - t_total
    return Measurement(
        profile=profile.name,
        batch_size=profile.batch_size,
        p50_ms=p50,
        p90_ms=max(p90, p50),
        p99_ms=max(p99, p90, p50),
        mean_ms=float(ms.mean()),
        std_ms=float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
        min_ms=float(ms.min()),
        runs=len(ms),
        warmup=max(res[2] for res in results),
        ci95_rel=float(ci_rel),
        converged=(ci_rel <= target_rel_ci) if single else stop == "converged",
        stop_reason=stop,  # type: ignore[arg-type]
        rounds=len(results),
        round_p50_ms=round_p50,
        spread_rel=None if single else spread,
        target_rel_spread=None if single else target_rel_spread,
        env=env,
        cost_s={k: round(v, 6) for k, v in cost.items()},
        **out,
    )


def with_base_latency(record: dict[str, Any], base_p50_ms: float) -> dict[str, Any]:
    """``record`` (a :class:`Measurement` as JSON) with the run's base latency and the
    drift-free median ``rel_p50 * base_p50_ms``; unchanged without a relative latency.

    Example:
        >>> with_base_latency({"p50_ms": 0.2, "rel_p50": 0.5}, 0.3)["drift_free_p50_ms"]
        0.15
    """
    if record.get("rel_p50") is None:
        return dict(record)
    return {**record, "base_p50_ms": float(base_p50_ms),
            "drift_free_p50_ms": float(record["rel_p50"]) * float(base_p50_ms)}


def _figures(results: list[Any], relative: bool) -> list[float]:
    """Per round: the candidate's median, or its ratio to the reference's median."""
    import numpy as np

    out = []
    for samples, _, _ in results:
        cand = float(np.median(samples[0]))
        out.append(cand / max(float(np.median(samples[1])), 1.0) if relative else cand)
    return out


def _spread(figures: list[float]) -> float:
    """Half the range of ``figures`` over their median (0 for one figure)."""
    import numpy as np

    mid = float(np.median(figures))
    return (max(figures) - min(figures)) / 2 / mid if mid > 0 else math.inf


def _warm_up(rts: list[Runtime], staged: list[list[Any]], warmup: int,
             warmup_seconds: float | None) -> int:
    """Untimed calls of each runtime, alternating, at most ``warmup`` each and (when given)
    no longer than ``warmup_seconds`` after the first; returns the calls made each."""
    n_feeds = len(staged[0])
    t0 = time.perf_counter()
    done = 0
    while done < warmup:
        for rt, st in zip(rts, staged, strict=True):
            rt.timed_call(st[done % n_feeds])
        done += 1
        if warmup_seconds is not None and time.perf_counter() - t0 >= warmup_seconds:
            break
    return done


def _sample(
    rts: list[Runtime],
    staged: list[list[Any]],
    *,
    min_runs: int,
    max_runs: int,
    max_seconds: float,
    target_rel_ci: float,
) -> tuple[list[list[int]], float, Literal["converged", "max_runs", "max_seconds"]]:
    """Time calls of each runtime in turn until every median's CI is narrow or a cap is hit.

    Returns the samples (ns) per runtime, the widest relative CI and why it stopped.
    """
    calls = [rt.timed_call for rt in rts]
    n_feeds = len(staged[0])
    samples: list[list[int]] = [[] for _ in rts]
    order = list(range(len(rts)))
    ci_rel = math.inf
    stop: Literal["converged", "max_runs", "max_seconds"] = "max_runs"
    # Checks sort every sample so far, and the call after a check runs with colder caches:
    # check on a geometric schedule so both stay a small share of the samples.
    next_check = min_runs
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a timed call is noise from us, not the model
    try:
        t_start = time.perf_counter()
        n = 0
        while n < max_runs:
            feed = n % n_feeds
            # ABBA order: the runtime called first in a pair runs on caches the other one left,
            # so which one goes first alternates, and neither gains from it.
            for i in (order if n % 2 == 0 else order[::-1]):
                samples[i].append(calls[i](staged[i][feed]))
            n += 1
            if n < min_runs:
                continue
            out_of_time = time.perf_counter() - t_start >= max_seconds
            if n >= next_check or n == max_runs or out_of_time:
                next_check = max(n + 10, int(n * 1.1))
                ci_rel = max(_median_ci_rel(s) for s in samples)
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
