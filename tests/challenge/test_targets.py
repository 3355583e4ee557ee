"""The issue's targets on crafted ladders whose answers are known."""

from __future__ import annotations

from challenge.gateway import GatewayRun
from challenge.ladder import targets
from challenge.report import Accuracy, Candidate, Carried, Point, Roofline, Step
from infopt.manifest import Decision
from infopt.stats import Interval

RATE = 4.0  # USD per hour


def _point(throughput: float, batch: int) -> Point:
    return Point(
        batch_size=batch,
        throughput_rps=throughput,
        throughput_rps_min=throughput,
        throughput_rps_max=throughput,
        latency_p50_ms=1.0,
        latency_p95_ms=1.0,
        latency_p99_ms=1.0,
        latency_p99_ms_max=1.0,
        predicted_request_p99_ms=None,
        mean_tokens=20.0,
        peak_memory_mb=1.0,
        cost_per_1k_usd=RATE / 3600 / throughput * 1000,
    )


def _accuracy(within: bool | None) -> Accuracy:
    interval = Interval(estimate=0.8, low=0.79, high=0.81, confidence=0.95)
    decision = None
    if within is not None:
        loss = Interval(estimate=0.0, low=-0.005, high=0.005 if within else 0.02, confidence=0.95)
        decision = Decision(
            baseline="step 1", engine="static", loss=loss, mcnemar_p=1.0, baseline_only=1, variant_only=1,
            budget=0.01, within_budget=within,
        )  # fmt: skip
    return Accuracy(n=10000, accuracy=interval, macro_f1=0.7, decision=decision, agreement_with_baseline=None)


def _roofline(best: float) -> Roofline:
    return Roofline(
        ceiling="bf16_matmul", ceiling_flops_per_s=7e14, flops_per_request=4e9, achieved_flops_per_s=1e14,
        fraction=0.1, best_batch_size=1024, best_fraction=best,
    )  # fmt: skip


def _candidate(name: str, linear: str, best: float, within: bool) -> Candidate:
    return Candidate(
        name=name, engine={"linear": linear, "precision": "bf16"}, status="measured", point=_point(1, 1),
        accuracy=_accuracy(within), roofline=_roofline(best),
    )  # fmt: skip


def _gateway(throughput: float, p99: float, meets: bool) -> GatewayRun:
    return GatewayRun(
        processes=6, mode="", client_processes=4, engine="", batching={}, sla_class="premium", p99_sla_ms=50.0,
        startup_s=1.0, levels=[], chosen=None, throughput_rps=throughput, latency_p50_ms=p99 / 2,
        latency_p95_ms=p99, latency_p99_ms=p99, meets_sla=meets,
    )  # fmt: skip


def _ladder(gateway_rps: float | None, within: bool, meets: bool = True) -> list[Step]:
    base = Carried(
        candidate="fp32", engine={}, batching=None, point=_point(100.0, 1), accuracy=_accuracy(None), roofline=None,
        throughput_gain=1.0, cost_gain=1.0,
    )  # fmt: skip
    final = Carried(
        candidate="graphs", engine={}, batching={"max_batch_size": 256}, point=_point(30_000.0, 256),
        accuracy=_accuracy(within), roofline=None, throughput_gain=300.0, cost_gain=300.0,
        gateway_throughput_rps=gateway_rps, gateway_p99_ms=None if gateway_rps is None else 40.0,
        gateway_cost_per_1k_usd=None if gateway_rps is None else RATE / 3600 / gateway_rps * 1000,
    )  # fmt: skip
    first = Step(index=1, key="baseline", title="", proposed_by="ladder", status="measured", carried=base)
    last = Step(
        index=4, key="launch_overhead", title="", proposed_by="ladder", status="measured", carried=final,
        candidates=[_candidate("graphs", "dense", 0.72, within), _candidate("fp8", "fp8", 1.1, within)],
        gateway=None if gateway_rps is None else _gateway(gateway_rps, 40.0, meets),
    )  # fmt: skip
    return [first, last]


def test_every_target_met_on_a_ladder_that_meets_them() -> None:
    result = {t.name: t for t in targets(_ladder(25_000.0, within=True), 50.0, "bf16_matmul")}
    assert result["throughput_200x"].value == 250.0 and result["throughput_200x"].met is True
    assert abs(result["cost_1_200"].value - 250.0) < 1e-9 and result["cost_1_200"].met is True  # type: ignore[operator]
    assert result["premium_p99_gateway"].value == 40.0 and result["premium_p99_gateway"].met is True
    assert abs(result["gateway_80pct"].value - 25 / 30) < 1e-12 and result["gateway_80pct"].met is True  # type: ignore[operator]
    assert result["dense_roofline_70"].value == 0.72 and result["dense_roofline_70"].met is True
    assert result["fp8_above_bf16_roofline"].value == 1.1 and result["fp8_above_bf16_roofline"].met is True


def test_a_fast_ladder_outside_the_accuracy_budget_meets_no_throughput_target() -> None:
    result = {t.name: t for t in targets(_ladder(25_000.0, within=False), 50.0, "bf16_matmul")}
    assert result["throughput_200x"].met is False and result["cost_1_200"].met is False
    assert result["dense_roofline_70"].met is None  # no candidate within the budget to count
    assert result["fp8_above_bf16_roofline"].met is None


def test_missed_sla_through_the_gateway_fails_throughput_and_latency() -> None:
    result = {t.name: t for t in targets(_ladder(25_000.0, within=True, meets=False), 50.0, "bf16_matmul")}
    assert result["throughput_200x"].met is False and result["premium_p99_gateway"].met is False
    assert result["cost_1_200"].met is True  # cost is priced on the throughput, whatever the latency


def test_without_a_gateway_run_the_gateway_targets_are_not_measured() -> None:
    result = {t.name: t for t in targets(_ladder(None, within=True), 50.0, "bf16_matmul")}
    for name in ("throughput_200x", "cost_1_200", "premium_p99_gateway", "gateway_80pct"):
        assert result[name].met is None and result[name].value is None, name
    assert result["dense_roofline_70"].met is True


def _batched(texts_per_s: float, meets: bool) -> GatewayRun:
    run = _gateway(texts_per_s / 16, 40.0, meets)
    return run.model_copy(update={"texts_per_request": 16, "texts_per_s": texts_per_s})


def test_batched_client_requests_are_judged_in_texts_beside_the_single_text_target() -> None:
    ladder = _ladder(10_000.0, within=True)
    result = {t.name: t for t in targets(ladder, 50.0, "bf16_matmul", _batched(27_000.0, meets=True))}
    assert result["gateway_80pct"].met is False  # single-text requests: 10k of 30k
    batched = result["gateway_80pct_batched_requests"]
    assert abs(batched.value - 0.9) < 1e-12 and batched.met is True  # type: ignore[operator]
    assert "16 texts per request" in batched.description


def test_a_batched_run_that_misses_the_sla_is_not_counted() -> None:
    ladder = _ladder(10_000.0, within=True)
    result = {t.name: t for t in targets(ladder, 50.0, "bf16_matmul", _batched(27_000.0, meets=False))}
    assert result["gateway_80pct_batched_requests"].met is None
    assert "gateway_80pct_batched_requests" not in {t.name for t in targets(ladder, 50.0, "bf16_matmul")}
