"""MO-ASHA finishing: non-dominated sorting, crowding, rung sizes and the rung plan."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any

from paretoforge.names import Phase, TrialAttr
from paretoforge.orchestrator.finish import (
    crowding_distance,
    nondominated_ranks,
    plan_rung,
    rung_epochs,
    rung_sizes,
    select,
)
from paretoforge.testing import tiny_spec

DIRS = ["maximize", "minimize"]


def _dominates(a, b) -> bool:
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def test_ranks_agree_with_brute_force() -> None:
    rng = random.Random(0)
    pts = [(rng.random(), rng.random()) for _ in range(60)] + [(0.5, 0.5), (0.5, 0.5)]
    ranks = nondominated_ranks(pts, DIRS)
    # rank 0 is exactly the set no point dominates
    front = {i for i, p in enumerate(pts) if not any(_dominates(q, p) for q in pts)}
    assert {i for i, r in enumerate(ranks) if r == 0} == front
    # a point is never dominated by one of its own rank or a worse one
    for i, j in itertools.permutations(range(len(pts)), 2):
        if _dominates(pts[i], pts[j]):
            assert ranks[i] < ranks[j]
    assert ranks[-1] == ranks[-2]  # equal points share a rank


def test_crowding_keeps_extremes() -> None:
    d = crowding_distance([(0.0, 3.0), (1.0, 2.0), (2.0, 1.5), (3.0, 0.0)])
    assert math.isinf(d[0]) and math.isinf(d[3])
    assert 0 < d[1] < math.inf and 0 < d[2] < math.inf


def test_select_takes_fronts_in_order() -> None:
    pts = [(0.9, 2.0), (0.8, 1.0), (0.7, 3.0), (0.85, 1.5), (0.6, 4.0)]
    assert select(pts, DIRS, 3) == [0, 1, 3]  # the whole front before any dominated point
    assert select(pts, DIRS, 4) == [0, 1, 2, 3]
    assert select(pts, DIRS, 0) == []
    assert select(pts, DIRS, 10) == [0, 1, 2, 3, 4]


def test_rung_sizes() -> None:
    assert rung_sizes(9, 3, 3) == [9, 3, 1]
    assert rung_sizes(10, 2, 3) == [10, 4]
    assert rung_sizes(1, 3, 2) == [1, 1, 1]


@dataclass
class _State:
    name: str = "COMPLETE"


@dataclass
class _Trial:  # the FrozenTrial fields plan_rung reads
    number: int
    values: list[float]
    params: dict[str, Any]
    user_attrs: dict[str, Any] = field(default_factory=dict)
    state: _State = field(default_factory=_State)


def _one_shot(n: int, acc: float, lat: float, layers: int = 1) -> _Trial:
    cfg = {"layers_kept": layers, "heads_kept": 1, "ffn_kept": 0.5, "precision": "fp32",
           "n": n}
    attrs = {TrialAttr.PHASE: Phase.ONE_SHOT, TrialAttr.KEY: f"k{n}", TrialAttr.CONFIG: cfg}
    return _Trial(n, [acc, lat], {"n": n}, attrs)


def test_plan_rung_selects_and_never_repeats() -> None:
    spec = tiny_spec(one_shot={"finish_candidates": 3, "finish_epochs": [1, 3], "eta": 3})
    base = _one_shot(0, 0.95, 5.0, layers=2)
    trials = [base, _one_shot(1, 0.9, 2.0), _one_shot(2, 0.8, 1.0), _one_shot(3, 0.7, 3.0),
              _one_shot(4, 0.85, 1.5), _one_shot(5, 0.6, 0.5)]
    unpruned = lambda c: c.get("layers_kept") == 2  # noqa: E731
    jobs = plan_rung(trials, spec, 0, is_unpruned=unpruned)
    origins = [a[TrialAttr.ONE_SHOT_TRIAL] for _, a in jobs]
    assert 0 not in origins  # the unpruned base has nothing to recover
    assert len(origins) == 3 and set(origins) <= {1, 2, 4, 5}
    assert all(a[TrialAttr.RECOVERY_EPOCHS] == 1 and a[TrialAttr.RUNG] == 0 for _, a in jobs)
    assert all(p == {"n": a[TrialAttr.ONE_SHOT_TRIAL]} for p, a in jobs)
    # once rung 0 ran, it is not planned again, and rung 1 takes the best ceil(3 / 3) = 1
    n = 10
    for params, attrs in jobs:
        src = trials[attrs[TrialAttr.ONE_SHOT_TRIAL]]
        trials.append(_Trial(n, [src.values[0] + 0.05, src.values[1]], params,
                             {**attrs, TrialAttr.KEY: f"k{src.number}-r1"}))
        n += 1
    assert plan_rung(trials, spec, 0, is_unpruned=unpruned) == []
    rung1 = plan_rung(trials, spec, 1, is_unpruned=unpruned)
    assert len(rung1) == 1 and rung1[0][1][TrialAttr.RECOVERY_EPOCHS] == 3
    origin = rung1[0][1][TrialAttr.ONE_SHOT_TRIAL]
    assert origin in origins
    # it continues from its rung-0 weights (ASHA's resume): 3 epochs in all, 2 still to train
    assert rung1[0][1][TrialAttr.RESUME_FROM] == f"k{origin}-r1"
    assert rung1[0][1][TrialAttr.RESUME_EPOCHS] == 1
    # finish_resume false: recovered again from the supernet weights, for all 3 epochs
    spec = tiny_spec(one_shot={"finish_candidates": 3, "finish_epochs": [1, 3], "eta": 3,
                               "finish_resume": False})
    again = plan_rung(trials, spec, 1, is_unpruned=unpruned)
    assert [p for p, _ in again] == [p for p, _ in rung1]
    assert TrialAttr.RESUME_FROM not in again[0][1]
    assert TrialAttr.RESUME_EPOCHS not in again[0][1]


def test_a_candidate_the_unpruned_model_dominates_is_finished_last() -> None:
    # MiniLM: three fp32 sub-networks slower than the unpruned int8 model were finished, and
    # none of them could reach the front (the unpruned int8 model is final as built).
    spec = tiny_spec(one_shot={"finish_candidates": 2, "finish_epochs": [1], "eta": 2})
    base_fp32 = _one_shot(0, 1.0, 34.0, layers=2)
    base_int8 = _one_shot(1, 0.99, 15.0, layers=2)
    slow = [_one_shot(2, 0.95, 33.0), _one_shot(3, 0.94, 32.0)]  # dominated by base_int8
    fast = [_one_shot(4, 0.80, 4.0), _one_shot(5, 0.90, 10.0)]  # not dominated
    unpruned = lambda c: c.get("layers_kept") == 2  # noqa: E731
    jobs = plan_rung([base_fp32, base_int8, *slow, *fast], spec, 0, is_unpruned=unpruned)
    assert sorted(a[TrialAttr.ONE_SHOT_TRIAL] for _, a in jobs) == [4, 5]
    # without the unpruned trials beside them, the slow ones are on the pruned trials' front
    jobs = plan_rung([*slow, *fast], spec, 0, is_unpruned=unpruned)
    assert 2 in {a[TrialAttr.ONE_SHOT_TRIAL] for _, a in jobs}
    # MiniLM again: an int8 sub-network 1.7% faster than the unpruned int8 model (one short
    # screening round) and worse is no alternative to it; the unpruned model counts 10% faster
    near = _one_shot(6, 0.94, 14.75)
    jobs = plan_rung([base_fp32, base_int8, near, *fast], spec, 0, is_unpruned=unpruned)
    assert sorted(a[TrialAttr.ONE_SHOT_TRIAL] for _, a in jobs) == [4, 5]
    # one clearly faster (15% here) stays a candidate
    clear = _one_shot(7, 0.94, 12.75)
    jobs = plan_rung([base_fp32, base_int8, clear, fast[0]], spec, 0, is_unpruned=unpruned)
    assert sorted(a[TrialAttr.ONE_SHOT_TRIAL] for _, a in jobs) == [4, 7]


def test_a_promotion_goes_to_what_recovery_improved_most_not_to_the_extremes() -> None:
    # The quickstart's first rung (one-shot -> 3 epochs, validation accuracy and ms): crowding
    # would promote the rank's two extremes, the 1-head network and a 4-layer one as slow as
    # the base (0.973 -> 0.991: nothing left to gain); the gains promote the 1-layer networks.
    spec = tiny_spec(one_shot={"finish_candidates": 6, "finish_epochs": [3, 9], "eta": 3})
    unpruned = lambda c: c.get("layers_kept") == 4  # noqa: E731
    trials = [_one_shot(0, 0.987, 0.263, layers=4)]
    rung0 = [(0.578, 0.773, 0.071), (0.858, 0.964, 0.081), (0.800, 0.911, 0.075),
             (0.893, 0.969, 0.104), (0.933, 0.978, 0.118), (0.973, 0.991, 0.249)]
    for i, (before, after, ms) in enumerate(rung0, start=1):
        trials.append(_one_shot(i, before, ms, layers=1 if i <= 3 else 2 if i <= 5 else 3))
        trials.append(_Trial(10 + i, [after, ms], {"n": i}, {
            TrialAttr.PHASE: Phase.FINISH.value, TrialAttr.RUNG: 0,
            TrialAttr.RECOVERY_EPOCHS: 3, TrialAttr.ONE_SHOT_TRIAL: i,
            TrialAttr.KEY: f"k{i}-r0"}))
    jobs = plan_rung(trials, spec, 1, is_unpruned=unpruned)
    assert sorted(a[TrialAttr.ONE_SHOT_TRIAL] for _, a in jobs) == [1, 3]  # gains .195, .111
    assert all(a[TrialAttr.RECOVERY_EPOCHS] == 9 for _, a in jobs)
    # crowding distance (rung 0's rule) would have taken the two extremes
    points = [(after, ms) for _, after, ms in rung0]
    assert select(points, DIRS, 2, beside=[(0.987, 0.263)]) == [0, 5]


def test_a_rung_gives_cheaper_candidates_more_epochs_up_to_the_scale() -> None:
    # finish_compute_scale 3: a 1-layer, 1-head network of a 2-layer, 2-head base keeps
    # (1/2/3 + 2*0.5/3)/2 = 0.25 of its compute and gets 3x the rung's epochs; with the
    # default scale of 1 every candidate gets the rung's epochs.
    from paretoforge.search_spaces import CandidateConfig

    unpruned = lambda c: c.get("layers_kept") == 2  # noqa: E731
    fraction = lambda c: CandidateConfig.model_validate(  # noqa: E731
        {k: v for k, v in c.items() if k != "n"}).compute_fraction(2, 2)
    trials = [_one_shot(0, 0.95, 5.0, layers=2), _one_shot(1, 0.9, 2.0),
              _one_shot(2, 0.8, 1.0)]
    for scale, want in ((3.0, 6), (1.0, 2), (2.0, 4)):
        spec = tiny_spec(one_shot={"finish_candidates": 2, "finish_epochs": [2],
                                   "finish_compute_scale": scale})
        jobs = plan_rung(trials, spec, 0, is_unpruned=unpruned, compute_fraction=fraction)
        assert sorted(a[TrialAttr.ONE_SHOT_TRIAL] for _, a in jobs) == [1, 2]
        assert {a[TrialAttr.RECOVERY_EPOCHS] for _, a in jobs} == {want}, scale
    # a candidate keeping most of the base's compute keeps the rung's epochs
    assert rung_epochs(2, 0.9, 3.0) == 2 and rung_epochs(2, None, 3.0) == 2


def test_a_rung_runs_its_longest_recoveries_first() -> None:
    """Epochs times the step's cost (teacher share + compute fraction), descending."""
    spec = tiny_spec(one_shot={"finish_candidates": 3, "finish_epochs": [2],
                               "finish_compute_scale": 4.0})
    trials = [_one_shot(0, 0.95, 5.0, layers=2), _one_shot(1, 0.9, 3.0),
              _one_shot(2, 0.85, 2.0), _one_shot(3, 0.8, 1.0)]
    fractions = {1: 0.9, 2: 0.25, 3: 0.5}
    jobs = plan_rung(trials, spec, 0, is_unpruned=lambda c: c.get("layers_kept") == 2,
                     compute_fraction=lambda c: fractions[c["n"]])
    # n=2: 8 epochs x (0.25 + 0.25) = 4.0; n=3: 4 x 0.75 = 3.0; n=1: 2 x 1.15 = 2.3
    assert [a[TrialAttr.ONE_SHOT_TRIAL] for _, a in jobs] == [2, 3, 1]
    assert [a[TrialAttr.RECOVERY_EPOCHS] for _, a in jobs] == [8, 4, 2]
