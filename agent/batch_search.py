"""Find the batch size with the highest throughput under a p99 SLA by measuring as few batch sizes as possible.

The batch-tuning node calls this where the manifest's sweep leaves a gap (the SLA boundary falls between two
measured sizes); `benchmarks/batch_tuning_efficiency.py` compares it with the exhaustive sweep.

Two facts about a served-shape sweep make a search possible:

1. A batch's p99 grows with its size (more rows, wider padding), so "meets the SLA" is true up to a boundary
   and false above it: a **bisection** between the largest size known to fit and the smallest known to miss
   finds the boundary in log2(range) measurements.
2. Throughput per replica rises with the batch size and flattens (or dips, past the cache) — one peak over
   the feasible sizes: a **golden-section search** over [smallest, boundary] finds it in log_phi(range)
   measurements. (A shortcut that stopped at the boundary when it beat its left neighbour was tried and
   dropped: on a flat, noisy curve one comparison of two neighbours sent the search to the wrong end.)

Noise can break both assumptions by a little: the answer is the best FEASIBLE point actually measured (never an
interpolation), and every measurement is kept, so a reviewer sees exactly what was run. Points already known
(the manifest's sweep) are free; only `measure` calls count as trials.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from infopt.manifest import BatchPoint

INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0  # 0.618...

Measure = Callable[[int], BatchPoint]
Feasible = Callable[[BatchPoint], bool]


class SearchError(ValueError):
    """The search cannot start (no candidates) or no candidate meets the SLA."""


@dataclass
class SearchResult:
    best: BatchPoint | None  # the highest-throughput feasible point measured or known; None: none fits
    points: dict[int, BatchPoint]  # every point known at the end (given + measured)
    measured: list[int] = field(default_factory=list)  # batch sizes measured, in order (the trials)
    boundary: int | None = None  # the largest candidate that meets the SLA (None: none does)

    @property
    def trials(self) -> int:
        return len(self.measured)


def search_batch(
    candidates: Sequence[int],
    measure: Measure,
    feasible: Feasible,
    known: Iterable[BatchPoint] = (),
) -> SearchResult:
    """The best feasible batch size among `candidates`, measuring only what the known points leave open."""
    sizes = sorted(set(candidates))
    if not sizes:
        raise SearchError("no candidate batch sizes to search")
    points: dict[int, BatchPoint] = {point.batch_size: point for point in known}
    measured: list[int] = []

    def get(index: int) -> BatchPoint:
        size = sizes[index]
        if size not in points:
            point = measure(size)
            if point.batch_size != size:
                raise SearchError(f"measure({size}) returned a point for batch {point.batch_size}")
            points[size] = point
            measured.append(size)
        return points[size]

    # 1. Bisection for the feasibility boundary (largest candidate index that meets the SLA).
    known_fit = [i for i, size in enumerate(sizes) if size in points and feasible(points[size])]
    known_miss = [i for i, size in enumerate(sizes) if size in points and not feasible(points[size])]
    low = max(known_fit, default=-1)  # largest index known to fit
    high = min((i for i in known_miss if i > low), default=len(sizes))  # smallest index above it known to miss
    if low < 0:
        if not feasible(get(0)):
            return SearchResult(None, points, measured, None)
        low = 0
    last = len(sizes) - 1
    if high == len(sizes) and low < last:
        if feasible(get(last)):
            low = last
        else:
            high = last
    while high - low > 1:
        middle = (low + high) // 2
        if feasible(get(middle)):
            low = middle
        else:
            high = middle
    boundary = low

    # 2. Golden-section search for the throughput peak over indices [0, boundary].
    def throughput(index: int) -> float:
        point = get(index)
        return point.throughput_rps if feasible(point) else -math.inf

    a, b = 0, boundary
    if b - a >= 3:
        c = b - round(INV_PHI * (b - a))
        d = a + round(INV_PHI * (b - a))
        while b - a >= 3:
            c = min(max(c, a + 1), b - 2)
            d = max(min(d, b - 1), c + 1)
            if throughput(c) < throughput(d):
                a, c = c, d
                d = a + round(INV_PHI * (b - a))
            else:
                b, d = d, c
                c = b - round(INV_PHI * (b - a))
    for index in range(a, b + 1):  # at most 3 left: measure them, the peak is among them
        throughput(index)
    throughput(boundary)
    fitting = [point for point in points.values() if point.batch_size in sizes and feasible(point)]
    best = max(fitting, key=lambda point: (point.throughput_rps, -point.batch_size), default=None)
    return SearchResult(best, points, measured, sizes[boundary])
