"""infopt/sla.py: the one SLA plan per deployment, on sweeps whose answer is known."""

from __future__ import annotations

import pytest

from infopt.manifest import BatchPoint, Sweep
from infopt.params import BatchingParams, SlaClass
from infopt.sla import SlaError, plan_sla, queue_target

PREMIUM = SlaClass(p99_ms=20, timeout_ms=250, priority=0, weight=8, k8s_priority_value=100000)
BATCH = SlaClass(p99_ms=None, timeout_ms=30000, priority=2, weight=1, k8s_priority_value=1000)
# batch -> (median p99, worst round's p99, median throughput)
CELLS = {
    1: (1.5, 2.0, 700.0),
    2: (2.5, 3.0, 900.0),
    4: (4.0, 5.0, 1000.0),
    8: (8.0, 9.0, 1100.0),
    16: (15.0, 17.0, 1150.0),
    32: (30.0, 34.0, 1120.0),
}


def sweep() -> Sweep:
    points = [
        BatchPoint(
            batch_size=batch,
            throughput_rps=rps,
            throughput_rps_min=rps * 0.9,
            throughput_rps_max=rps * 1.1,
            latency_p50_ms=p99 / 2,
            latency_p95_ms=p99 * 0.9,
            latency_p99_ms=p99,
            latency_p99_ms_min=p99 * 0.9,
            latency_p99_ms_max=worst,
            mean_tokens=16.0,
            peak_memory_mb=10.0,
            cost_per_1k_usd=0.096 / 3.6 / rps,
            iterations=60,
            rounds=3,
        )
        for batch, (p99, worst, rps) in CELLS.items()
    ]
    return Sweep(engine="onnxruntime", threads=1, device="cpu", points=points)


def batching(max_batch: int, wait: float) -> BatchingParams:
    return BatchingParams(mode="dynamic", max_batch_size=max_batch, max_wait_ms=wait)


def test_queue_target_formula() -> None:
    # floor((20 - 2 - 9) / 9 * 8) = 8
    assert queue_target(20, 2, 9, 8) == 8
    assert queue_target(20, 2, 17, 16) == 1  # floor(0.94) clamps to 1


def test_plan_holds_at_the_largest_batch_within_the_sla_using_the_worst_round() -> None:
    plan = plan_sla(sweep(), "premium", PREMIUM, batching(32, 2))
    # 2 ms wait + worst p99: batch 16 -> 19 ms fits 20; batch 32 -> 36 does not.
    assert (plan.batch_size, plan.meets_sla, plan.predicted_p99_ms, plan.queue_target) == (16, True, 19.0, 1)
    assert plan.throughput_rps == 1150.0 and not plan.larger_batch_fits


def test_max_batch_size_changes_the_plan_and_the_hpa_target() -> None:
    capped = plan_sla(sweep(), "premium", PREMIUM, batching(8, 2))
    assert (capped.batch_size, capped.queue_target) == (8, 8)
    assert capped.larger_batch_fits  # batch 16 would also meet the SLA: the agent can propose raising the cap
    smaller = plan_sla(sweep(), "premium", PREMIUM, batching(4, 2))
    assert (smaller.batch_size, smaller.queue_target) == (4, 10)  # floor((20 - 2 - 5) / 5 * 4) = floor(10.4)


def test_max_wait_counts_against_the_sla() -> None:
    patient = plan_sla(sweep(), "premium", PREMIUM, batching(32, 10))
    assert patient.batch_size == 8  # 10 + 9 = 19 fits; 10 + 17 does not


def test_a_plan_that_cannot_meet_the_sla_says_so() -> None:
    strict = SlaClass(p99_ms=1.0, timeout_ms=100, priority=0, weight=1, k8s_priority_value=10)
    plan = plan_sla(sweep(), "premium", strict, batching(32, 2))
    assert (plan.meets_sla, plan.batch_size, plan.queue_target) == (False, 1, 1)
    assert "MISSES" in plan.describe()


def test_batch_class_takes_the_best_median_throughput_under_the_cap() -> None:
    plan = plan_sla(sweep(), "batch", BATCH, batching(64, 10))
    assert (plan.batch_size, plan.queue_target) == (16, 64)  # 1150 req/s at 16 beats 1120 at 32
    assert plan_sla(sweep(), "batch", BATCH, batching(8, 10)).batch_size == 8


def test_a_cap_below_every_measured_batch_is_an_error_naming_it() -> None:
    points = [p for p in sweep().points if p.batch_size >= 2]
    with pytest.raises(SlaError, match="max_batch_size 1 is below every measured batch size"):
        plan_sla(
            Sweep(engine="onnxruntime", threads=1, device="cpu", points=points), "premium", PREMIUM, batching(1, 2)
        )
