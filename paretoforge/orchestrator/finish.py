"""Finishing a one-shot front: successive halving over recovery epochs, ranked by
non-dominated sorting (MO-ASHA, Schmucker et al. 2021).

The one-shot phase scores every sub-network as cut from the supernet, without recovery. Its
best candidates -- the front first, then the next fronts, ties broken by crowding distance,
ranked beside the unpruned model at each precision (final as built, and counted
``UNPRUNED_MARGIN`` faster and smaller than measured, so a candidate it dominates or nearly
matches comes after it) --
are then distilled from the unpruned base, starting from their supernet weights, for the first
rung's epochs; the best ``1/eta`` of each rung go on to the next rung's larger budget,
continuing from the weights the rung before gave them (ASHA's resume; ``finish_resume``): ranked
by non-dominated rank on their recovered values, and within a rank by how much the last
rung's recovery improved them (:func:`recovery_gains`). Optuna's multi-objective studies have
no pruners, so the schedule is planned here and run by the ask-and-tell loop as fixed trials.

The plan is a pure function of the study's completed trials: a driver that restarts mid-way
plans the same rungs again and runs only what is missing.

Example:
    >>> nondominated_ranks([(0.9, 2.0), (0.8, 1.0), (0.7, 3.0)], ["maximize", "minimize"])
    [0, 0, 1]
    >>> select([(0.9, 2.0), (0.8, 1.0), (0.7, 3.0), (0.85, 1.5)], ["maximize", "minimize"], 2)
    [0, 1]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from paretoforge.names import Phase, StopReason, TrialAttr
from paretoforge.orchestrator.hypervolume import _to_min

__all__ = ["crowding_distance", "finish_front", "nondominated_ranks", "plan_rung", "rung_epochs",
           "recovery_gains", "rung_sizes", "select"]


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True))


def nondominated_ranks(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """The non-dominated sorting rank of each point: 0 for the front, 1 for the front of the
    rest, and so on (Deb et al.'s fast non-dominated sort)."""
    pts = [_to_min(p, directions) for p in points]
    n = len(pts)
    dominated_by = [0] * n
    dominates: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if _dominates(pts[i], pts[j]):
                dominates[i].append(j)
                dominated_by[j] += 1
            elif _dominates(pts[j], pts[i]):
                dominates[j].append(i)
                dominated_by[i] += 1
    ranks = [-1] * n
    current = [i for i in range(n) if dominated_by[i] == 0]
    rank = 0
    while current:
        nxt = []
        for i in current:
            ranks[i] = rank
            for j in dominates[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    nxt.append(j)
        current, rank = nxt, rank + 1
    return ranks


def crowding_distance(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II's crowding distance of each point within ``points`` (one front): the extremes
    of each objective get infinity, so they are kept first."""
    n = len(points)
    if n <= 2:
        return [math.inf] * n
    dist = [0.0] * n
    for m in range(len(points[0])):
        order = sorted(range(n), key=lambda i: (points[i][m], i))
        lo, hi = points[order[0]][m], points[order[-1]][m]
        dist[order[0]] = dist[order[-1]] = math.inf
        if hi == lo:
            continue
        for k in range(1, n - 1):
            dist[order[k]] += (points[order[k + 1]][m] - points[order[k - 1]][m]) / (hi - lo)
    return dist


def select(points: Sequence[Sequence[float]], directions: Sequence[str], k: int, *,
           beside: Sequence[Sequence[float]] = (),
           within: Sequence[float] | None = None) -> list[int]:
    """Indices of the ``k`` best points: by non-dominated rank, then within a rank by
    ``within`` (one score per point, largest first) or by default by crowding distance, then
    by index; returned in ascending index order.

    ``beside`` are points that take part in the ranking and are never chosen (e.g. the
    unpruned model at each precision: a candidate they dominate is ranked behind them)."""
    if k <= 0 or not points:
        return []
    if within is not None and len(within) != len(points):
        raise ValueError(f"select: {len(within)} scores for {len(points)} points")
    every = [*points, *beside]
    ranks = nondominated_ranks(every, directions)
    score = [0.0] * len(every)
    if within is not None:
        score[:len(points)] = [float(v) for v in within]
    else:
        for r in set(ranks):
            members = [i for i, x in enumerate(ranks) if x == r]
            for i, d in zip(members, crowding_distance([every[i] for i in members]),
                            strict=True):
                score[i] = d
    order = sorted(range(len(points)), key=lambda i: (ranks[i], -score[i], i))
    return sorted(order[:k])


def recovery_gains(before: Sequence[Sequence[float]], after: Sequence[Sequence[float]],
                   directions: Sequence[str]) -> list[float]:
    """How much each candidate's recovery improved it: per objective, the change in its
    direction over the range of that objective across ``after``, summed.

    Example:
        >>> [round(g, 3) for g in recovery_gains([(0.6, 1.0), (0.9, 2.0)],
        ...                                      [(0.8, 1.0), (0.95, 2.0)],
        ...                                      ["maximize", "minimize"])]
        [1.333, 0.333]
    """
    spans = [(max(p[m] for p in after) - min(p[m] for p in after)) or 1.0
             for m in range(len(directions))]
    sign = [1.0 if d == "maximize" else -1.0 for d in directions]
    return [sum(sign[m] * (a[m] - b[m]) / spans[m] for m in range(len(directions)))
            for b, a in zip(before, after, strict=True)]


def rung_sizes(candidates: int, rungs: int, eta: int) -> list[int]:
    """How many candidates each rung recovers: ``candidates``, then ``ceil(n / eta)`` each.

    Example:
        >>> rung_sizes(9, 3, 3)
        [9, 3, 1]
    """
    sizes = []
    n = candidates
    for _ in range(rungs):
        sizes.append(n)
        n = max(1, math.ceil(n / eta))
    return sizes


def _feasible(t: Any) -> bool:
    return all(c <= 0 for c in (t.user_attrs.get(TrialAttr.CONSTRAINTS) or []))


def rung_epochs(epochs: int, fraction: float | None, scale: float) -> int:
    """A candidate's epochs at a rung of ``epochs``: ``epochs`` times ``min(scale,
    1 / fraction)``, rounded, never fewer than ``epochs`` (``fraction``: the share of the
    base's compute it keeps; None: unknown, the rung's epochs).

    Example:
        >>> rung_epochs(3, 0.125, 3.0), rung_epochs(3, 0.6, 3.0), rung_epochs(3, 0.9, 3.0)
        (9, 5, 3)
    """
    if fraction is None or fraction <= 0 or scale <= 1.0:
        return epochs
    return max(epochs, round(epochs * min(scale, 1.0 / fraction)))


#: How much better than measured the unpruned model counts when rung 0 ranks candidates
#: beside it, on each minimized objective (latency, size): a screening measurement is one
#: short round, and a candidate within this of the unpruned model is no real alternative.
UNPRUNED_MARGIN = 0.10


def _with_margin(values: tuple[float, ...], directions: Sequence[str]) -> tuple[float, ...]:
    """``values`` with each minimized objective ``UNPRUNED_MARGIN`` (of its magnitude) lower.

    Example:
        >>> _with_margin((0.99, 20.0, -2.0), ["maximize", "minimize", "minimize"])
        (0.99, 18.0, -2.2)
    """
    return tuple(v - abs(v) * UNPRUNED_MARGIN if d == "minimize" else v
                 for v, d in zip(values, directions, strict=True))


#: A distillation step's cost beside the student's compute fraction: the unpruned teacher's
#: forward pass, about a quarter of a full-size student's step (quickstart finishing: an
#: epoch took 0.2 + 0.9 x the compute fraction seconds).
RECOVERY_TEACHER_SHARE = 0.25


def plan_rung(trials: Sequence[Any], spec: Any, rung: int, *,
              is_unpruned: Callable[[dict[str, Any]], bool],
              compute_fraction: Callable[[dict[str, Any]], float] | None = None,
              ) -> list[tuple[dict, dict]]:
    """The fixed trials ``(params, user_attrs)`` of finishing rung ``rung`` still to run.

    Rung 0 takes the best ``one_shot.finish_candidates`` pruned one-shot trials (feasible ones
    first: a rung ranks the feasible, then the infeasible if too few), ranked beside the
    unpruned model's trials (at every precision), which are never chosen; rung ``r`` the best of
    rung ``r - 1``'s results, ``ceil(n / eta)`` of them. Candidates whose trial at this rung
    is complete already (a resumed driver) are left out: nothing runs twice.

    A candidate's epochs are the rung's, scaled by :func:`rung_epochs` to its
    ``compute_fraction(config)`` when ``one_shot.finish_compute_scale`` > 1. With
    ``one_shot.finish_resume`` (the default) a promoted candidate continues from the weights
    of its rung ``r - 1`` trial (its artifact key in ``RESUME_FROM``, their epochs in
    ``RESUME_EPOCHS``) and trains only the epochs still missing; ``RECOVERY_EPOCHS`` is the
    total either way. The trials come longest first (epochs to train times the step's cost,
    :data:`RECOVERY_TEACHER_SHARE` plus the compute fraction), so the rung's workers finish
    together.
    """
    o = spec.one_shot
    directions = [obj.direction for obj in spec.objectives]
    done = [t for t in trials if t.state.name == "COMPLETE"]
    if rung == 0:
        seen: set[str] = set()
        pool = []
        for t in sorted(done, key=lambda t: t.number):
            key = t.user_attrs.get(TrialAttr.KEY)
            if (t.user_attrs.get(TrialAttr.PHASE) != Phase.ONE_SHOT or key in seen
                    or is_unpruned(t.user_attrs.get(TrialAttr.CONFIG, {}))):
                continue
            seen.add(key)
            pool.append(t)
        size = o.finish_candidates
    else:
        pool = [t for t in done if t.user_attrs.get(TrialAttr.PHASE) == Phase.FINISH
                and t.user_attrs.get(TrialAttr.RUNG) == rung - 1
                and TrialAttr.CACHED_FROM not in t.user_attrs]
        size = rung_sizes(o.finish_candidates, rung + 1, o.eta)[rung]
    feasible = [t for t in pool if _feasible(t)]
    ranked = feasible if len(feasible) >= size else pool
    # The unpruned model at each precision is final as built: a candidate it dominates is
    # ranked behind it (the MiniLM run finished three fp32 sub-networks slower than the
    # unpruned int8 model: 563 s of worker time). It counts as UNPRUNED_MARGIN better on
    # each minimized objective: a sub-network a few percent faster than it in a one-round
    # screening measurement, and worse, has nothing to gain (MiniLM: an int8 sub-network
    # 1.7% faster than the unpruned int8 model took 115 s of finishing, and left the front
    # with nothing between 1.6x and 6.7x).
    unpruned = [_with_margin(tuple(t.values), directions) for t in done
                if t.user_attrs.get(TrialAttr.PHASE) != Phase.FINISH
                and is_unpruned(t.user_attrs.get(TrialAttr.CONFIG, {})) and _feasible(t)]
    # Rung 0 spreads over the one-shot front (crowding distance). A promotion, within a rank,
    # takes first the candidates the last rung's recovery improved most: crowding sent the
    # quickstart's 9-epoch rung to the rank's two extremes, one of them a 4-layer network as
    # slow as the base with nothing left to gain, while a 1-layer network gains the most
    # (0.58 -> 0.77 validation accuracy in 3 epochs, 0.87 test after 9).
    within = None
    if rung > 0:
        by_number = {t.number: t for t in done}
        origins = [by_number.get(t.user_attrs.get(TrialAttr.ONE_SHOT_TRIAL)) for t in ranked]
        if all(o is not None and o.values is not None for o in origins):
            within = recovery_gains([tuple(o.values) for o in origins],
                                    [tuple(t.values) for t in ranked], directions)
    chosen = [ranked[i] for i in select([tuple(t.values) for t in ranked], directions, size,
                                        beside=unpruned, within=within)]
    epochs = o.finish_epochs[rung]
    have = {t.user_attrs.get(TrialAttr.ONE_SHOT_TRIAL) for t in done
            if t.user_attrs.get(TrialAttr.PHASE) == Phase.FINISH
            and t.user_attrs.get(TrialAttr.RUNG) == rung}
    out = []
    cost: list[float] = []  # a recovery's expected seconds, up to a factor
    for t in chosen:
        origin = t.number if rung == 0 else t.user_attrs[TrialAttr.ONE_SHOT_TRIAL]
        if origin in have:
            continue
        fraction = None
        if compute_fraction is not None and t.user_attrs.get(TrialAttr.CONFIG):
            fraction = compute_fraction(t.user_attrs[TrialAttr.CONFIG])
        scaled = rung_epochs(epochs, fraction, o.finish_compute_scale)
        attrs = {TrialAttr.PHASE: Phase.FINISH.value, TrialAttr.RUNG: rung,
                 TrialAttr.RECOVERY_EPOCHS: scaled, TrialAttr.ONE_SHOT_TRIAL: origin}
        todo = scaled
        before = t.user_attrs.get(TrialAttr.RECOVERY_EPOCHS)
        if rung > 0 and o.finish_resume and before is not None and int(before) < scaled:
            # ASHA's resume: from the weights rung - 1 gave it, for the epochs still missing
            attrs[TrialAttr.RESUME_FROM] = t.user_attrs[TrialAttr.KEY]
            attrs[TrialAttr.RESUME_EPOCHS] = int(before)
            todo = scaled - int(before)
        out.append((dict(t.params), attrs))
        cost.append(todo * (RECOVERY_TEACHER_SHARE + (1.0 if fraction is None else fraction)))
    # Longest first, so the rung does not end on one long recovery while the other workers
    # wait (the last job to start is a short one).
    order = sorted(range(len(out)), key=lambda i: -cost[i])
    return [out[i] for i in order]


def finish_front(loop: Any, spec: Any, *, is_unpruned: Callable[[dict[str, Any]], bool],
                 compute_fraction: Callable[[dict[str, Any]], float] | None = None,
                 log: Callable[[str], None] = print) -> int:
    """Run every finishing rung on ``loop`` (a :class:`~paretoforge.orchestrator.loop.
    SearchLoop` whose one-shot phase has run); return how many trials it ran."""
    ran = 0
    for rung in range(len(spec.one_shot.finish_epochs)):
        jobs = plan_rung(loop.study.get_trials(deepcopy=False), spec, rung,
                         is_unpruned=is_unpruned, compute_fraction=compute_fraction)
        if not jobs:
            continue
        got = sorted({int(a[TrialAttr.RECOVERY_EPOCHS]) for _, a in jobs})
        span = f"{got[0]}-{got[-1]} epochs (by their compute)" if len(got) > 1 else (
            f"{got[0]} epoch(s)")
        resumed = sum(TrialAttr.RESUME_FROM in a for _, a in jobs)
        source = ("from their supernet weights" if not resumed else
                  f"in all, continuing from their rung {rung - 1} weights" if resumed == len(jobs)
                  else f"in all, {resumed} continuing from their rung {rung - 1} weights")
        log(f"finishing rung {rung}: {len(jobs)} candidate(s) recovered for {span} {source}")
        loop.run_fixed(jobs, phase=Phase.FINISH.value)
        ran += len(jobs)
        if loop.stats.stop_reason not in (None, StopReason.EXHAUSTED):
            break
    return ran
