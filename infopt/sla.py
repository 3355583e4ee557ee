"""The SLA knee of a latency sweep, and the HPA queue target that follows from it.

Pure functions over measured `BatchPoint`s: the benchmark stage, the manifest, the agent and the infra
program all derive knees the same way from the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from infopt.manifest import BatchPoint, SlaKnee
from infopt.params import SlaClass

BATCH_CLASS_QUEUE_FACTOR = 4  # a class without a latency SLA may queue this many full batches per replica


class KneeError(ValueError):
    """The sweep is empty, so no knee can be derived."""


def queue_target(p99_sla_ms: float, p99_at_knee_ms: float, knee_batch: int) -> int:
    """Requests that may queue per replica so that queue wait + one batch still meets the SLA.

    A replica serving batches of `knee_batch` at `p99_at_knee_ms` drains `knee_batch / p99_at_knee_ms`
    requests per ms. The slack left by one batch is `p99_sla_ms - p99_at_knee_ms`, so the queue it may
    hold is

        floor((p99_sla_ms - p99_at_knee_ms) / p99_at_knee_ms * knee_batch), clamped to >= 1

    (the clamp keeps the HPA target meaningful when the knee batch alone uses up the SLA).
    """
    slack = (p99_sla_ms - p99_at_knee_ms) / p99_at_knee_ms * knee_batch
    return max(1, math.floor(slack))


def sla_knee(points: Sequence[BatchPoint], sla_class: str, p99_sla_ms: float | None, engine: str) -> SlaKnee:
    """The knee of one engine's sweep for one SLA class.

    - With a p99 SLA: the largest measured batch whose p99 <= the SLA (meets_sla True). If even the
      smallest batch misses it, that batch-1 point with meets_sla False and queue_target 1.
    - Without one (the batch class): the max-throughput batch, queue_target = that batch x 4.
    """
    if not points:
        raise KneeError(f"no measured points for engine {engine!r}; cannot derive the {sla_class} knee")
    ordered = sorted(points, key=lambda point: point.batch_size)
    if p99_sla_ms is None:
        best = max(ordered, key=lambda point: (point.throughput_rps, -point.batch_size))
        return _knee(best, sla_class, engine, best.batch_size * BATCH_CLASS_QUEUE_FACTOR, meets=True)
    meeting = [point for point in ordered if point.latency_p99_ms <= p99_sla_ms]
    if not meeting:
        return _knee(ordered[0], sla_class, engine, 1, meets=False)
    knee = meeting[-1]
    return _knee(knee, sla_class, engine, queue_target(p99_sla_ms, knee.latency_p99_ms, knee.batch_size), meets=True)


def knees_for_engine(points: Sequence[BatchPoint], classes: Mapping[str, SlaClass], engine: str) -> dict[str, SlaKnee]:
    return {name: sla_knee(points, name, sla.p99_ms, engine) for name, sla in classes.items()}


def best_knee(candidates: Sequence[SlaKnee]) -> SlaKnee:
    """Across engines: a knee that meets the SLA beats one that does not; then the higher throughput."""
    if not candidates:
        raise KneeError("no knees to choose from")
    return max(candidates, key=lambda knee: (knee.meets_sla, knee.throughput_rps))


def _knee(point: BatchPoint, sla_class: str, engine: str, target: int, *, meets: bool) -> SlaKnee:
    return SlaKnee(
        sla_class=sla_class,
        engine=engine,
        batch_size=point.batch_size,
        latency_p99_ms=point.latency_p99_ms,
        throughput_rps=point.throughput_rps,
        cost_per_1k_usd=point.cost_per_1k_usd,
        queue_target=target,
        meets_sla=meets,
    )
