"""Two-objective Pareto fronts and their exact hypervolume (latency and memory, both minimised).

Stdlib only: the search planner and the replay benchmark (``qco-tune bench search``) share it.
"""

from __future__ import annotations

from collections.abc import Iterable

Point = tuple[float, float]


def pareto_points(points: Iterable[Point]) -> list[Point]:
    """The points no other point dominates (both coordinates minimised), sorted by the first; duplicates once."""
    front: list[Point] = []
    best_second = float("inf")
    for x, y in sorted(set(points)):
        if y < best_second:
            front.append((x, y))
            best_second = y
    return front


def hypervolume_2d(points: Iterable[Point], reference: Point) -> float:
    """The area dominated by ``points`` and bounded by ``reference`` (exact; points beyond it add nothing)."""
    rx, ry = reference
    inside = [(x, y) for x, y in points if x < rx and y < ry]
    area = 0.0
    previous_y = ry
    for x, y in pareto_points(inside):  # x ascending, y descending
        area += (rx - x) * (previous_y - y)
        previous_y = y
    return area
