"""One SLA plan per deployment: the batch size its batcher and its HPA agree on, and the HPA queue target.

`plan_sla` is the only place this is computed. It reads the served-shape sweep measured for the deployment's
own engine, device and intra-op threads, and takes the deployment's own `max_batch_size` and `max_wait_ms`:

- A request may wait up to `max_wait_ms` for its batch to fill, then runs in a batch of up to
  `max_batch_size`. Its p99 is predicted as `max_wait_ms + p99(batch)`, where p99(batch) is the WORST round's
  p99 of that measured cell (a decision on the spread, not on one lucky round).
- The plan's batch size is the largest measured batch <= max_batch_size whose predicted p99 meets the class's
  SLA. A class without a latency SLA (batch) takes the measured batch <= max_batch_size with the highest
  median throughput.
- The HPA's `request_queue_length` target per replica is how many requests may wait so that queueing plus one
  batch still fits the SLA: a replica drains `b / p99(b)` requests per ms, so

      queue_target = floor((p99_sla - max_wait - p99(b)) / p99(b) * b), at least 1

  and, without a latency SLA, `b * BATCH_CLASS_QUEUE_FACTOR`.
- When even the smallest batch misses the SLA, the plan says so (`meets_sla` False, queue target 1).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from infopt.manifest import BatchPoint, Sweep
from infopt.params import BatchingParams, SlaClass

BATCH_CLASS_QUEUE_FACTOR = 4  # a class without a latency SLA may queue this many full batches per replica


class SlaError(ValueError):
    """No plan can be made from the sweep; the message names the deployment setting and what was measured."""


class SlaPlan(BaseModel):
    """How one deployment holds its SLA class on one replica."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sla_class: str
    p99_sla_ms: float | None
    engine: str
    device: str
    threads: int
    max_batch_size: int
    max_wait_ms: float
    batch_size: int  # the measured batch the plan holds at
    latency_p99_ms: float  # worst round's engine p99 at batch_size
    predicted_p99_ms: float  # max_wait_ms + latency_p99_ms
    throughput_rps: float  # median per-replica throughput at batch_size
    cost_per_1k_usd: float
    queue_target: int  # HPA request_queue_length target per replica
    meets_sla: bool
    larger_batch_fits: bool  # a measured batch above max_batch_size would also meet the SLA

    def describe(self) -> str:
        """One line for tables and PR bodies."""
        sla = f"SLA p99 {self.p99_sla_ms:g} ms" if self.p99_sla_ms is not None else "no latency SLA"
        verdict = "meets" if self.meets_sla else "MISSES"
        return (
            f"batch {self.batch_size}: {self.throughput_rps:,.0f} req/s, p99 {self.predicted_p99_ms:.1f} ms "
            f"(wait {self.max_wait_ms:g} + engine {self.latency_p99_ms:.1f}), ${self.cost_per_1k_usd:.2e}/1k, "
            f"queue target {self.queue_target}; {verdict} {self.sla_class} ({sla})"
        )


def queue_target(p99_sla_ms: float, max_wait_ms: float, p99_at_batch_ms: float, batch: int) -> int:
    """Requests that may wait per replica so that the wait + one batch still meets the SLA (see module doc)."""
    slack = (p99_sla_ms - max_wait_ms - p99_at_batch_ms) / p99_at_batch_ms * batch
    return max(1, math.floor(slack))


def plan_sla(sweep: Sweep, sla_class: str, sla: SlaClass, batching: BatchingParams) -> SlaPlan:
    """The SLA plan of a deployment whose engine was measured by `sweep` (see the module docstring)."""
    ordered = sorted(sweep.points, key=lambda point: point.batch_size)
    candidates = [point for point in ordered if point.batch_size <= batching.max_batch_size]
    if not candidates:
        raise SlaError(
            f"max_batch_size {batching.max_batch_size} is below every measured batch size "
            f"{[p.batch_size for p in ordered]} of the {sweep.engine} sweep ({sweep.threads} threads, {sweep.device})"
        )
    wait = batching.max_wait_ms

    def fits(point: BatchPoint) -> bool:
        return sla.p99_ms is not None and wait + point.latency_p99_ms_max <= sla.p99_ms

    if sla.p99_ms is None:
        chosen = max(candidates, key=lambda point: (point.throughput_rps, -point.batch_size))
        target, meets = chosen.batch_size * BATCH_CLASS_QUEUE_FACTOR, True
    else:
        meeting = [point for point in candidates if fits(point)]
        chosen = meeting[-1] if meeting else candidates[0]
        meets = bool(meeting)
        target = queue_target(sla.p99_ms, wait, chosen.latency_p99_ms_max, chosen.batch_size) if meets else 1
    larger = [point for point in ordered if point.batch_size > batching.max_batch_size]
    return SlaPlan(
        sla_class=sla_class,
        p99_sla_ms=sla.p99_ms,
        engine=sweep.engine,
        device=sweep.device,
        threads=sweep.threads,
        max_batch_size=batching.max_batch_size,
        max_wait_ms=wait,
        batch_size=chosen.batch_size,
        latency_p99_ms=chosen.latency_p99_ms_max,
        predicted_p99_ms=wait + chosen.latency_p99_ms_max,
        throughput_rps=chosen.throughput_rps,
        cost_per_1k_usd=chosen.cost_per_1k_usd,
        queue_target=target,
        meets_sla=meets,
        larger_batch_fits=sla.p99_ms is not None and any(fits(point) for point in larger),
    )
