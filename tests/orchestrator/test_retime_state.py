"""The front re-time's interval, widened to the machine states the whole run saw."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from paretoforge.names import TrialAttr
from paretoforge.orchestrator.retime import _widen_by_machine_state


def _ratio(r0: float, gamma: float, b: float, b0: float = 0.2) -> float:
    """The model the widening fits: log r = log r0 + gamma (1 - r0) log(b / b0)."""
    return math.exp(math.log(r0) + gamma * (1.0 - r0) * math.log(b / b0))


def _run(tmp_path: Path, states: list[float]) -> SimpleNamespace:
    trials = []
    for i in range(0, len(states), 5):  # the run's other trials: 5 reference rounds each
        d = tmp_path / "artifacts" / f"k{i}"
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps(
            {"config": {}, "key": f"k{i}", "metrics": {}, "files": {},
             "measurements": {"cpu-1t": {"ref_round_p50_ms": states[i:i + 5]}}}))
        trials.append(SimpleNamespace(user_attrs={TrialAttr.ARTIFACT_DIR: f"artifacts/k{i}"}))
        # a trial answered from that artifact: its states count once
        trials.append(SimpleNamespace(user_attrs={TrialAttr.ARTIFACT_DIR: f"artifacts/k{i}"}))
    trials.append(SimpleNamespace(user_attrs={}))  # a trial without artifacts: skipped
    return SimpleNamespace(dir=tmp_path, trials=lambda: trials)


def _member(r0: float, gamma: float, bs: list[float], noise: random.Random) -> dict:
    rel = [_ratio(r0, gamma, b) * (1 + noise.uniform(-0.002, 0.002)) for b in bs]
    search, retime = rel[:3], rel[3:]
    return {"rel_rounds": retime, "ref_round_p50_ms": bs[3:],
            "rel_p50": sorted(rel)[len(rel) // 2],
            "rel_low": min(retime), "rel_high": max(retime),
            "search_rel_rounds": search, "search_ref_round_p50_ms": bs[:3],
            "interval": "range of every round"}


@pytest.mark.parametrize("gamma", [0.4, -0.4])
def test_the_interval_reaches_the_run_s_slowest_state_whichever_the_slope_s_sign(
        tmp_path, gamma: float) -> None:
    noise = random.Random(0)
    # the front's own rounds saw the machine between 0.19 and 0.23 ms; the run, up to 0.30
    bs = [0.19, 0.2, 0.23, 0.2, 0.21, 0.19, 0.22, 0.2]
    got = {str(t): {"cpu-1t": _member(r0, gamma, bs, noise)}
           for t, r0 in ((1, 0.25), (2, 0.45), (0, 1.0))}
    run = _run(tmp_path, [0.18 + 0.12 * i / 199 for i in range(200)])
    before = {t: (v["cpu-1t"]["rel_low"], v["cpu-1t"]["rel_high"]) for t, v in got.items()}
    _widen_by_machine_state(run, got)
    for t, r0 in (("1", 0.25), ("2", 0.45)):
        rec = got[t]["cpu-1t"]
        assert rec["state_gamma"] == pytest.approx(gamma, rel=0.1)
        assert abs(gamma) < rec["state_sensitivity"] < abs(gamma) + 0.1  # + 2 se, small here
        lo, hi = rec["state_ref_range_ms"]
        assert 0.18 <= lo < 0.185 and 0.295 < hi <= 0.30
        # a re-measurement in the run's slowest state lands inside the widened interval,
        # outside the rounds' own range, on whichever side the slope puts it
        slow = _ratio(r0, gamma, 0.298)
        assert not before[t][0] <= slow <= before[t][1]
        assert rec["rel_low"] <= slow <= rec["rel_high"]
        # and about as far on the other side: the sign is not trusted
        low_gain, high_gain = before[t][0] - rec["rel_low"], rec["rel_high"] - before[t][1]
        near = before[t][0] - slow if slow < before[t][0] else slow - before[t][1]
        assert min(low_gain, high_gain) > 0.5 * near > 0
        assert "widened" in rec["interval"]
    base = got["0"]["cpu-1t"]  # ratio 1: no slope, the interval barely moves
    assert base["rel_high"] - base["rel_low"] < 0.01


def test_nothing_changes_without_the_run_s_reference_rounds(tmp_path) -> None:
    got = {"1": {"cpu-1t": _member(0.3, 0.4, [0.2] * 8, random.Random(1))}}
    before = dict(got["1"]["cpu-1t"])
    _widen_by_machine_state(_run(tmp_path, []), got)
    assert got["1"]["cpu-1t"] == before
