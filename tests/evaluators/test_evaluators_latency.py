from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from paretoforge._system import pinned
from paretoforge.evaluators import Measurement, measure_latency, median_ci
from paretoforge.exceptions import MeasurementError, PlacementError
from paretoforge.hw_profiles import HardwareProfile, get_profile

FAST = {"warmup": 2, "min_runs": 20, "max_runs": 60, "max_seconds": 0.5}


def test_measurement_is_consistent(eval_onnx: Path, samples: np.ndarray) -> None:
    m = measure_latency(eval_onnx, get_profile("cpu-1t"), {"pixel_values": samples}, **FAST)
    assert isinstance(m, Measurement)
    assert 0 < m.min_ms <= m.p50_ms <= m.p90_ms <= m.p99_ms
    assert m.std_ms >= 0 and m.mean_ms > 0
    # Rounds (3 to 5 by the profile), each of min_runs..max_runs timed calls.
    assert 3 <= m.rounds <= 5 and len(m.round_p50_ms) == m.rounds
    assert m.rounds * FAST["min_runs"] <= m.runs <= m.rounds * FAST["max_runs"]
    assert m.warmup == 2 and m.batch_size == 1 and m.profile == "cpu-1t"
    assert m.stop_reason in {"converged", "max_rounds", "max_seconds"}
    # converged is about reproduction: the between-round spread met its target
    assert m.converged == (m.spread_rel <= m.target_rel_spread) == (m.stop_reason == "converged")
    assert min(m.round_p50_ms) <= m.p50_ms <= max(m.round_p50_ms)
    assert math.isfinite(m.ci95_rel) and not m.predicted
    for key in (
        "cpu_model",
        "logical_cores",
        "affinity",
        "intra_op_threads",
        "provider",
        "onnxruntime_version",
        "hostname",
    ):
        assert m.env[key] not in (None, ""), key
    assert m.env["intra_op_threads"] == 1
    assert m.env["provider"] == "CPUExecutionProvider"
    from paretoforge._sysinfo import machine_identity

    assert m.env["machine"] == machine_identity()  # the ISA the number came from
    # JSON round trip for trial user_attrs and manifests.
    assert Measurement.model_validate(json.loads(m.model_dump_json())) == m


def test_batch_size_and_few_samples(eval_onnx: Path, samples: np.ndarray) -> None:
    profile = HardwareProfile(name="b8", device="cpu", intra_op_threads=1, batch_size=8)
    m = measure_latency(eval_onnx, profile, {"pixel_values": samples[:3]}, **FAST)
    assert m.batch_size == 8 and m.runs >= m.rounds * FAST["min_runs"]


def test_max_runs_caps(eval_onnx: Path, samples: np.ndarray) -> None:
    m = measure_latency(
        eval_onnx,
        get_profile("cpu-1t"),
        {"pixel_values": samples},
        warmup=0,
        min_runs=5,
        max_runs=7,
        target_rel_ci=1e-9,
        rounds=1,
        max_rounds=1,
    )
    assert m.runs == 7 and m.stop_reason == "max_runs" and not m.converged


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_pinning_restores_affinity(eval_onnx: Path, samples: np.ndarray) -> None:
    before = os.sched_getaffinity(0)
    core = min(before)
    m = measure_latency(
        eval_onnx, get_profile("cpu"), {"pixel_values": samples}, cores=[core], **FAST
    )
    assert m.env["affinity"] == [core]
    assert m.env["intra_op_threads"] == 1  # "all cores" of a one-core slot
    assert os.sched_getaffinity(0) == before


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_affinity_restored_after_failure(eval_onnx: Path, samples: np.ndarray) -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(MeasurementError):
        measure_latency(
            eval_onnx, get_profile("cpu"), {"nope": samples}, cores=[min(before)], **FAST
        )
    assert os.sched_getaffinity(0) == before


def test_bad_cores(eval_onnx: Path, samples: np.ndarray) -> None:
    with pytest.raises(MeasurementError, match="Cannot pin"):
        measure_latency(
            eval_onnx, get_profile("cpu"), {"pixel_values": samples}, cores=[10_000], **FAST
        )


def test_too_many_threads_for_slot(eval_onnx: Path, samples: np.ndarray) -> None:
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("needs sched_setaffinity")
    wide = HardwareProfile(name="w", device="cpu", intra_op_threads=2)
    with pytest.raises(PlacementError):
        measure_latency(
            eval_onnx,
            wide,
            {"pixel_values": samples},
            cores=[min(os.sched_getaffinity(0))],
            **FAST,
        )


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        ({"images": "ok"}, "'images' is not an input"),
        ({}, "'pixel_values' is missing"),
        ({"pixel_values": "f64"}, "dtype float64.*float32"),
        ({"pixel_values": "rank"}, "rank"),
        ({"pixel_values": "size"}, "axis 2"),
        ({"pixel_values": "empty"}, "no samples"),
    ],
)
def test_bad_inputs_named(
    eval_onnx: Path, samples: np.ndarray, inputs: dict[str, str], match: str
) -> None:
    variants = {
        "ok": samples,
        "f64": samples.astype(np.float64),
        "rank": samples[:, 0],
        "size": np.ones((2, 1, 9, 8), np.float32),
        "empty": samples[:0],
    }
    feed = {name: variants[v] for name, v in inputs.items()}
    with pytest.raises(MeasurementError, match=match):
        measure_latency(eval_onnx, get_profile("cpu-1t"), feed, **FAST)


def test_bad_arguments(eval_onnx: Path, samples: np.ndarray) -> None:
    with pytest.raises(MeasurementError, match="min_runs"):
        measure_latency(
            eval_onnx, get_profile("cpu-1t"), {"pixel_values": samples}, min_runs=10, max_runs=5
        )
    with pytest.raises(MeasurementError, match="target_rel_ci"):
        measure_latency(
            eval_onnx, get_profile("cpu-1t"), {"pixel_values": samples}, target_rel_ci=0
        )


def test_median_ci_covers_median() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 10, 50, 2000):
        x = np.sort(rng.lognormal(size=n)).tolist()
        lo, hi = median_ci(x)
        assert lo <= float(np.median(x)) <= hi
    # Wider than nothing, narrower as n grows (relative to the spread).
    lo_s, hi_s = median_ci(list(range(100)))
    lo_l, hi_l = median_ci(list(range(10_000)))
    assert (hi_l - lo_l) / 10_000 < (hi_s - lo_s) / 100
    with pytest.raises(ValueError):
        median_ci([])


def test_median_ci_coverage_is_about_95_percent() -> None:
    # Distribution-free: check coverage on a skewed distribution with a known median.
    rng = np.random.default_rng(1)
    hits = 0
    trials = 400
    for _ in range(trials):
        x = np.sort(rng.exponential(size=101)).tolist()
        lo, hi = median_ci(x)
        hits += lo <= math.log(2) <= hi
    assert 0.9 <= hits / trials <= 0.99


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs sched_setaffinity and 2 cores")
def test_pinned_worker_can_widen_for_an_all_core_profile(eval_onnx: Path,
                                                         samples: np.ndarray) -> None:
    """A worker pinned to one core measures the all-core profile on every core, then returns."""
    before = os.sched_getaffinity(0)
    everything = sorted(before)
    os.sched_setaffinity(0, {everything[0]})
    try:
        m = measure_latency(eval_onnx, get_profile("cpu"), {"pixel_values": samples},
                            cores=everything, **FAST)
        assert m.env["affinity"] == everything
        assert os.sched_getaffinity(0) == {everything[0]}
    finally:
        os.sched_setaffinity(0, before)


def _counting_hold(log: list[str]):
    import contextlib

    @contextlib.contextmanager
    def hold():
        log.append("enter")
        yield
        log.append("exit")

    return hold


def test_rounds_are_independent_and_spread_decides_convergence(eval_onnx: Path,
                                                               samples: np.ndarray) -> None:
    x = {"pixel_values": samples}
    profile = get_profile("cpu-1t")
    # an unreachable spread target: every round is taken, and it did not converge
    m = measure_latency(eval_onnx, profile, x, rounds=2, max_rounds=4, target_rel_spread=1e-9,
                        **FAST)
    assert m.rounds == 4 and m.stop_reason == "max_rounds" and not m.converged
    assert m.env["sessions"] == "fresh per round"
    med = float(np.median(m.round_p50_ms))
    assert m.p50_ms == pytest.approx(med)
    assert m.spread_rel == pytest.approx(
        (max(m.round_p50_ms) - min(m.round_p50_ms)) / 2 / med)
    # a target any spread meets: it stops after the rounds it must take
    m = measure_latency(eval_onnx, profile, x, rounds=3, max_rounds=5, target_rel_spread=0.99,
                        **FAST)
    assert m.rounds == 3 and m.converged and m.stop_reason == "converged"
    assert m.target_rel_spread == 0.99
    # the profile's settings apply when none are given
    tight = profile.model_copy(update={"latency_rounds": 2, "latency_max_rounds": 2})
    assert measure_latency(eval_onnx, tight, x, **FAST).rounds == 2
    with pytest.raises(MeasurementError, match="rounds"):
        measure_latency(eval_onnx, profile, x, rounds=3, max_rounds=2)


def test_relative_latency_against_a_reference(eval_onnx: Path, samples: np.ndarray,
                                              tmp_path: Path) -> None:
    from paretoforge.evaluators.latency import with_base_latency

    log: list[str] = []
    m = measure_latency(eval_onnx, get_profile("cpu-1t"), {"pixel_values": samples},
                        reference=eval_onnx, rounds=3, max_rounds=3, hold=_counting_hold(log),
                        **FAST)
    assert log == ["enter", "exit"]  # one hold, around the timed calls of every round
    assert len(m.rel_rounds) == len(m.ref_round_p50_ms) == len(m.round_p50_ms) == m.rounds
    for rel, c, r in zip(m.rel_rounds, m.round_p50_ms, m.ref_round_p50_ms, strict=True):
        assert rel == pytest.approx(c / r)
    assert m.rel_low == min(m.rel_rounds) <= m.rel_p50 <= max(m.rel_rounds) == m.rel_high
    assert m.rel_p50 == pytest.approx(float(np.median(m.rel_rounds)))
    assert m.ref_p50_ms == pytest.approx(float(np.median(m.ref_round_p50_ms)))
    # the spread that decides convergence is the relative one's
    med = float(np.median(m.rel_rounds))
    assert m.spread_rel == pytest.approx((m.rel_high - m.rel_low) / 2 / med)
    assert m.env["reference"] == str(eval_onnx)
    for stage in ("sessions_s", "warmup_s", "timed_s", "hold_wait_s", "held_s", "total_s"):
        assert m.cost_s[stage] >= 0, stage
    # the drift-free figure scales the relative latency by the run's one base latency
    rec = with_base_latency(m.model_dump(mode="json"), 2.0)
    assert rec["drift_free_p50_ms"] == pytest.approx(2.0 * m.rel_p50)
    assert Measurement.model_validate(rec).base_p50_ms == 2.0
    assert with_base_latency({"p50_ms": 1.0}, 2.0) == {"p50_ms": 1.0}  # nothing to scale
    with pytest.raises(MeasurementError, match="No ONNX model"):  # a missing reference
        measure_latency(eval_onnx, get_profile("cpu-1t"), {"pixel_values": samples},
                        reference=tmp_path / "absent.onnx")


def test_a_kept_reference_session_serves_every_round_and_stays_open(eval_onnx: Path,
                                                                    samples: np.ndarray) -> None:
    # a screening measurement's reference: loaded once by the caller, timed beside each
    # fresh candidate session, never closed by the measurement
    from paretoforge.kernels.runtime import load_runtime

    profile = get_profile("cpu-1t")
    x = {"pixel_values": samples}
    with pinned([0]):
        ref = load_runtime(eval_onnx, profile, n_cores=1)
    try:
        for _ in range(2):  # two measurements, as two trials share it
            m = measure_latency(eval_onnx, profile, x, reference=ref, cores=[0], rounds=2,
                                max_rounds=2, **FAST)
            assert len(m.rel_rounds) == 2 and m.ref_p50_ms > 0
            assert m.env["reference"] == str(eval_onnx)
            assert m.env["reference_session"] == "kept, reused across measurements"
            assert m.env["sessions"] == "fresh per round"  # the candidate's
        assert ref.session.run(None, {"pixel_values": samples[:1]})  # still open
    finally:
        ref.close()
