"""Hypervolume of a set of objective vectors, and an incrementally kept Pareto front.

The hypervolume is the volume of objective space that the points dominate, bounded by a
reference point. paretoforge's reference point is the worst value observed on each objective
(over all completed trials), so the number needs no user input; it is stated wherever the
hypervolume is shown, because a new worst point moves it.

Example:
    >>> round(hypervolume([(0.9, 2.0), (0.8, 1.0)], ["maximize", "minimize"], (0.7, 3.0)), 6)
    0.3
    >>> worst_point([(0.9, 2.0), (0.8, 1.0)], ["maximize", "minimize"])
    (0.8, 2.0)
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ParetoArchive", "hypervolume", "worst_point"]


def _to_min(p: Sequence[float], directions: Sequence[str]) -> tuple[float, ...]:
    return tuple(-float(v) if d == "maximize" else float(v)
                 for v, d in zip(p, directions, strict=True))


def worst_point(points: Sequence[Sequence[float]], directions: Sequence[str]
                ) -> tuple[float, ...]:
    """The worst observed value of each objective (min of a maximised one, max of a minimised)."""
    if not points:
        raise ValueError("worst_point needs at least one point")
    return tuple(
        (min if d == "maximize" else max)(float(p[i]) for p in points)
        for i, d in enumerate(directions)
    )


def hypervolume(points: Sequence[Sequence[float]], directions: Sequence[str],
                reference: Sequence[float]) -> float:
    """Volume dominated by ``points`` and bounded by ``reference`` (exact; small fronts).

    Points that do not strictly improve on the reference in every objective add nothing.

    Args:
        points: Objective vectors, in the objectives' own units and directions.
        directions: ``"maximize"`` or ``"minimize"`` per objective.
        reference: The bounding point, in the same units (e.g. :func:`worst_point`).
    """
    ref = _to_min(reference, directions)
    pts = [q for q in (_to_min(p, directions) for p in points)
           if all(a < r for a, r in zip(q, ref, strict=True))]
    return _hv(pts, ref)


def _hv(pts: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Hypervolume by slicing along the last objective (all objectives minimised)."""
    if not pts:
        return 0.0
    d = len(ref)
    if d == 1:
        return ref[0] - min(p[0] for p in pts)
    if d == 2:
        total, best_y = 0.0, ref[1]
        for x, y in sorted(pts):
            if y < best_y:
                total += (ref[0] - x) * (best_y - y)
                best_y = y
        return total
    pts = sorted(pts, key=lambda p: p[-1])
    total = 0.0
    for i, p in enumerate(pts):
        upper = pts[i + 1][-1] if i + 1 < len(pts) else ref[-1]
        if upper > p[-1]:
            total += _hv([q[:-1] for q in pts[: i + 1]], ref[:-1]) * (upper - p[-1])
    return total


class ParetoArchive:
    """The non-dominated subset of the points added so far, kept up to date point by point.

    Example:
        >>> a = ParetoArchive(["maximize", "minimize"])
        >>> a.add((0.9, 3.0)), a.add((0.8, 4.0)), a.add((0.95, 3.0))
        (True, False, True)
        >>> a.points
        [(0.95, 3.0)]
    """

    def __init__(self, directions: Sequence[str]) -> None:
        self.directions = list(directions)
        self.points: list[tuple[float, ...]] = []

    def add(self, point: Sequence[float]) -> bool:
        """Add ``point``; True if it joins the front (dominated points are dropped)."""
        p = tuple(float(v) for v in point)
        q = _to_min(p, self.directions)
        kept = []
        for other in self.points:
            o = _to_min(other, self.directions)
            if all(a <= b for a, b in zip(o, q, strict=True)):
                return False  # dominated by, or equal to, a point already on the front
            if not (all(a <= b for a, b in zip(q, o, strict=True)) and q != o):
                kept.append(other)
        kept.append(p)
        self.points = kept
        return True

    def __len__(self) -> int:
        return len(self.points)
