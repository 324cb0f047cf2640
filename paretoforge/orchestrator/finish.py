"""Finishing a one-shot front: successive halving over recovery epochs, ranked by
non-dominated sorting (MO-ASHA, Schmucker et al. 2021).

The one-shot phase scores every sub-network as cut from the supernet, without recovery. Its
best candidates -- the front first, then the next fronts, ties broken by crowding distance --
are then distilled from the unpruned base, starting from their supernet weights, for the first
rung's epochs; the best ``1/eta`` of each rung (ranked the same way on their recovered values)
go on to the next rung's larger budget. Optuna's multi-objective studies have no pruners, so the
schedule is planned here and run by the ask-and-tell loop as fixed trials.

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
from collections.abc import Sequence

__all__ = ["crowding_distance", "nondominated_ranks", "rung_sizes", "select"]


def _oriented(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[list[float]]:
    """Every objective turned into one to minimise."""
    sign = [-1.0 if d == "maximize" else 1.0 for d in directions]
    return [[s * float(v) for s, v in zip(sign, p, strict=True)] for p in points]


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True))


def nondominated_ranks(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """The non-dominated sorting rank of each point: 0 for the front, 1 for the front of the
    rest, and so on (Deb et al.'s fast non-dominated sort)."""
    pts = _oriented(points, directions)
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


def select(points: Sequence[Sequence[float]], directions: Sequence[str], k: int) -> list[int]:
    """Indices of the ``k`` best points: by non-dominated rank, then by crowding distance
    within a rank (largest first), then by index; returned in ascending index order."""
    if k <= 0 or not points:
        return []
    ranks = nondominated_ranks(points, directions)
    crowd = [0.0] * len(points)
    for r in set(ranks):
        members = [i for i, x in enumerate(ranks) if x == r]
        for i, d in zip(members, crowding_distance([points[i] for i in members]), strict=True):
            crowd[i] = d
    order = sorted(range(len(points)), key=lambda i: (ranks[i], -crowd[i], i))
    return sorted(order[:k])


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
