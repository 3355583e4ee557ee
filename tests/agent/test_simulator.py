"""The gateway simulator: hand-checked timelines, queueing theory, and the real queue/batcher as the oracle."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from agent.capacity import CurveError, ServiceCurve, curve_from_points, service_curve
from agent.simulator import (
    BatchingSpec,
    ClassSpec,
    GatewayModel,
    HostModel,
    _Pod,
    _Row,
    class_specs,
    cut_size,
    poisson_arrivals,
    simulate,
)
from infopt.manifest import BatchPoint, load_manifest
from infopt.params import BatchingParams, SlaClass

CLASSES = {
    "premium": ClassSpec("premium", priority=0, weight=8, timeout_s=0.25, p99_sla_s=0.05),
    "standard": ClassSpec("standard", priority=1, weight=3, timeout_s=1.0, p99_sla_s=0.1),
    "batch": ClassSpec("batch", priority=2, weight=1, timeout_s=30.0),
}


def fixed(times_ms: dict[int, float]) -> ServiceCurve:
    """A deterministic curve: p50 == p99, so every batch of a size takes exactly that long."""
    sizes = tuple(sorted(times_ms))
    values = tuple(times_ms[size] / 1000 for size in sizes)
    return ServiceCurve(sizes, values, values, source="test")


def model(curve: ServiceCurve, **batching: object) -> GatewayModel:
    spec = {"mode": "dynamic", "max_batch_size": 8, "max_wait_s": 0.002, "preferred_batch_sizes": (4, 8)} | batching
    return GatewayModel(classes=CLASSES, batching=BatchingSpec(**spec), curve=curve)  # type: ignore[arg-type]


def test_lone_request_waits_the_batch_window_then_one_service_time() -> None:
    result = simulate(model(fixed({1: 1.0, 8: 4.0})), [(0.0, "premium")])
    assert result.classes["premium"].latencies_s == pytest.approx([0.002 + 0.001])
    assert result.batches == 1


def test_a_full_batch_is_cut_at_once_and_a_late_row_waits_for_the_replica() -> None:
    arrivals = [(0.0, "premium")] * 8 + [(0.0005, "premium")]
    result = simulate(model(fixed({1: 1.0, 8: 4.0})), arrivals)
    latencies = sorted(result.classes["premium"].latencies_s)
    # 8 rows: cut at t=0, done at 4 ms. The 9th (t=0.5 ms) is queued while the only replica is busy; the
    # window opens at 4 ms with its deadline already past (0.5 + 2 ms), so it is cut alone: 4 + 1 = 5 ms.
    assert latencies[:8] == pytest.approx([0.004] * 8)
    assert latencies[8] == pytest.approx(0.005 - 0.0005)
    assert result.batches == 2


def test_window_cuts_at_the_largest_preferred_size() -> None:
    arrivals = [(0.0001 * i, "standard") for i in range(6)]  # 6 rows inside one 2 ms window
    result = simulate(model(fixed({1: 1.0, 8: 8.0})), arrivals)
    # window closes at 2 ms with 6 queued: cut 4 (preferred), then 2 more wait for the replica (4 rows take
    # 1 + 3/7*7 = 4 ms by interpolation), then go as a batch of 2.
    assert result.batches == 2
    assert result.mean_batch_size == pytest.approx(3.0)


def test_a_row_past_its_deadline_fails_even_while_its_batch_runs() -> None:
    slow = fixed({1: 300.0, 8: 300.0})  # premium times out at 250 ms
    result = simulate(model(slow), [(0.0, "premium"), (0.0, "batch")])
    assert result.classes["premium"].expired == 1
    assert result.classes["premium"].served == 0
    assert result.classes["batch"].served == 1


def test_queued_rows_expire_at_their_deadline_and_leave_the_queue() -> None:
    slow = fixed({1: 900.0, 8: 900.0})
    arrivals = [(0.0, "standard")] + [(0.001 * (i + 1), "premium") for i in range(3)]
    result = simulate(model(slow, max_batch_size=1, preferred_batch_sizes=()), arrivals)
    # the first row holds the only replica for 0.9 s; the premium rows queue behind it and time out at 250 ms
    assert result.classes["premium"].expired == 3
    assert result.classes["standard"].served == 1


def test_full_queue_refuses_or_evicts_the_newest_lower_class_row() -> None:
    slow = fixed({1: 50.0})
    capped = GatewayModel(classes=CLASSES, batching=BatchingSpec("dynamic", 1, 0.0, ()), curve=slow, queue_capacity=2)
    arrivals = [(0.0, "batch"), (0.001, "batch"), (0.002, "batch"), (0.003, "batch"), (0.004, "premium")]
    result = simulate(capped, arrivals)
    # t=0: first batch row runs; 2 more fill the queue; the 4th batch row is refused; the premium row evicts
    # the newest queued batch row.
    assert result.classes["batch"].rejected == 2
    assert result.classes["batch"].served == 2
    assert result.classes["premium"].served == 1


def test_mean_latency_matches_pollaczek_khinchine_for_md1() -> None:
    curve = fixed({1: 10.0})
    single = GatewayModel(
        classes={"standard": ClassSpec("standard", 0, 1, 10.0, 0.1)},
        batching=BatchingSpec("dynamic", 1, 0.0, ()),
        curve=curve,
    )
    for rate in (50.0, 75.0):
        arrivals = poisson_arrivals([{"standard": rate}], 800.0, random.Random(7))
        latencies = simulate(single, arrivals, warmup_s=10.0).classes["standard"].latencies_s
        rho = rate * 0.010
        expected = 0.010 + rate * 0.010**2 / (2 * (1 - rho))  # M/D/1 mean wait + service
        assert float(np.mean(latencies)) == pytest.approx(expected, rel=0.05)


def test_pods_split_poisson_traffic_and_capacity_scales_with_them() -> None:
    curve = fixed({1: 10.0})
    single = GatewayModel(
        classes={"standard": ClassSpec("standard", 0, 1, 10.0, 0.1)},
        batching=BatchingSpec("dynamic", 1, 0.0, ()),
        curve=curve,
    )
    arrivals = poisson_arrivals([{"standard": 150.0}], 400.0, random.Random(3))
    two = simulate(single, arrivals, pods=2, warmup_s=5.0)
    alone = simulate(single, poisson_arrivals([{"standard": 75.0}], 800.0, random.Random(4)), warmup_s=5.0)
    # two pods at 150 req/s behave like one at 75 req/s (random routing splits Poisson into Poisson)
    assert two.utilization == pytest.approx(0.75, abs=0.02)
    assert float(np.mean(two.classes["standard"].latencies_s)) == pytest.approx(
        float(np.mean(alone.classes["standard"].latencies_s)), rel=0.06
    )


def test_weighted_take_matches_the_real_queue() -> None:
    """The simulator's dequeue order equals serving/queue.py's on the same backlog."""
    from serving.queue import QueuedItem, RequestQueue

    slas = {
        "premium": SlaClass(p99_ms=50, timeout_ms=250, priority=0, weight=8, k8s_priority_value=3),
        "standard": SlaClass(p99_ms=100, timeout_ms=1000, priority=1, weight=3, k8s_priority_value=2),
        "batch": SlaClass(p99_ms=None, timeout_ms=30000, priority=2, weight=1, k8s_priority_value=1),
    }
    backlog = [name for name in ("premium", "standard", "batch") for _ in range(10)]
    random.Random(5).shuffle(backlog)

    async def real_order() -> list[str]:
        queue = RequestQueue(slas, capacity=100)
        loop = asyncio.get_running_loop()
        for name in backlog:
            queue.put_many([QueuedItem(None, "t", name, 0.0, 1e9, loop.create_future())])
        order = []
        for size in (5, 7, 12, 6):
            order += [item.sla_class for item in queue.take(size, 0.0)]
        return order

    sim_model = GatewayModel(classes=class_specs(slas), batching=BatchingSpec(), curve=fixed({1: 1.0}))
    pod = _Pod(sim_model)
    for name in backlog:
        row = _Row(0.0, 1e9, name, 0, 0, 0.0, 0.0)
        pod.items[name].append(row)
        pod.live[name] += 1
        pod.size += 1
    sim_order = []
    for size in (5, 7, 12, 6):
        sim_order += [row.klass for row in pod.take(size, 0.0)]
    assert sim_order == asyncio.run(real_order())
    assert [sim_order[:12].count(name) for name in ("premium", "standard", "batch")] == [8, 3, 1]


@pytest.mark.parametrize("available", range(1, 20))
def test_cut_size_matches_the_real_batcher(available: int) -> None:
    from serving.batcher import cut_size as real_cut_size

    for batching in (
        BatchingParams(max_batch_size=8, max_wait_ms=2, preferred_batch_sizes=[4, 8]),
        BatchingParams(max_batch_size=16, max_wait_ms=5, preferred_batch_sizes=[]),
        BatchingParams(max_batch_size=12, max_wait_ms=5, preferred_batch_sizes=[3, 6]),
    ):
        spec = BatchingSpec(
            "dynamic", batching.max_batch_size, batching.max_wait_ms / 1000, tuple(batching.preferred_batch_sizes)
        )
        assert cut_size(available, spec) == real_cut_size(available, batching)


def test_curve_interpolates_and_its_lognormal_hits_both_quantiles() -> None:
    curve = ServiceCurve((1, 4), (0.002, 0.005), (0.004, 0.010))
    assert curve.p50(2) == pytest.approx(0.003)
    assert curve.p99(8) == pytest.approx(0.018)  # extrapolated along the last segment
    rng = random.Random(0)
    samples = np.array([curve.sample(4, rng) for _ in range(40000)])
    assert float(np.median(samples)) == pytest.approx(0.005, rel=0.02)
    assert float(np.percentile(samples, 99)) == pytest.approx(0.010, rel=0.05)


def test_manifest_adapter_reads_the_deployments_engine_sweep() -> None:
    manifest = load_manifest("tests/fixtures/manifest.json")
    entry = manifest.variant("int8-dynamic")
    curve = service_curve(entry, "onnxruntime", 1, "cpu", manifest_path="m.json")
    assert curve.batch_sizes == (1, 2, 4, 8, 16, 32, 64)
    assert curve.p50(1) == pytest.approx(0.001075)
    assert curve.p99(8) == pytest.approx(0.005194)  # the worst round's p99, as infopt.sla plans with
    assert curve.source == "m.json: variants[int8-dynamic].sweeps[engine=onnxruntime,threads=1,device=cpu]"
    assert service_curve(entry, "onnxruntime", 2, "cpu").p50(1) != curve.p50(1)  # the pod's thread count
    with pytest.raises(CurveError, match="no served-shape sweep for engine 'vllm' with 1 thread"):
        service_curve(entry, "vllm", 1, "cpu")
    with pytest.raises(CurveError, match="with 4 thread"):
        service_curve(entry, "onnxruntime", 4, "cpu")
    points = [
        BatchPoint(
            batch_size=2,
            throughput_rps=1,
            throughput_rps_min=1,
            throughput_rps_max=1,
            latency_p50_ms=3,
            latency_p95_ms=4,
            latency_p99_ms=4.5,
            latency_p99_ms_min=4,
            latency_p99_ms_max=5,
            mean_tokens=10,
            peak_memory_mb=0,
            cost_per_1k_usd=0,
            iterations=5,
            rounds=3,
        )
    ]
    assert curve_from_points(points, "x").p99(2) == pytest.approx(0.005)


def test_static_batching_waits_for_a_full_batch_but_not_past_the_deadline_margin() -> None:
    static = model(fixed({1: 1.0, 4: 2.0}), mode="static", max_batch_size=4, preferred_batch_sizes=())
    lone = simulate(static, [(0.0, "premium")])
    # no batch time measured yet: flush at the deadline (250 ms) minus the 10 ms margin, then 1 ms of service
    assert lone.classes["premium"].latencies_s == pytest.approx([0.240 + 0.001])
    full = simulate(static, [(0.0, "standard"), (0.001, "standard"), (0.002, "standard"), (0.003, "standard")])
    assert sorted(full.classes["standard"].latencies_s) == pytest.approx([0.002, 0.003, 0.004, 0.005])


# ------------------------------------------------------------------ the host around the engine
def with_host(curve: ServiceCurve, host: HostModel, **batching: object) -> GatewayModel:
    return model(curve, **batching).__class__(**{**model(curve, **batching).__dict__, "host": host})


def test_a_lone_request_passes_both_event_loops_around_the_engine() -> None:
    host = HostModel(cores=8, loop_in_s=0.001, loop_out_s=0.0005, client_send_s=0.0002, client_receive_s=0.0003)
    result = simulate(with_host(fixed({1: 1.0, 8: 4.0}), host), [(0.0, "premium")])
    # send 0.2 + loop in 1.0 + window 2.0 + engine 1.0 + loop out 0.5 + receive 0.3 ms
    assert result.classes["premium"].latencies_s == pytest.approx([0.005])
    # the gateway's own time (its Server-Timing): loop in + window + engine + loop out, without the client
    assert result.classes["premium"].gateway_latencies_s == pytest.approx([0.0045])


def test_the_gateways_own_time_leaves_out_the_client_and_adds_its_overhead_samples() -> None:
    lone = [(0.0, "premium")]
    plain = simulate(model(fixed({1: 1.0, 8: 4.0})), lone)
    assert plain.classes["premium"].gateway_latencies_s == pytest.approx([0.003])  # window 2 + engine 1 ms
    sampled = model(fixed({1: 1.0, 8: 4.0})).__class__(
        **{**model(fixed({1: 1.0, 8: 4.0})).__dict__, "overhead_s": (0.004,), "gateway_overhead_s": (0.0005,)}
    )
    result = simulate(sampled, lone).classes["premium"]
    assert result.latencies_s == pytest.approx([0.007]) and result.gateway_latencies_s == pytest.approx([0.0035])
    assert result.gateway_percentile_ms(50) == pytest.approx(3.5)


def test_the_event_loop_is_a_single_server_queue() -> None:
    """M/D/1 at the loop (engine and window ~0): mean latency = d + rho d / (2 (1 - rho))."""
    d, rate = 0.004, 150.0  # rho = 0.6
    host = HostModel(cores=64, loop_in_s=d, loop_out_s=0.0)
    arrivals = poisson_arrivals([{"batch": rate}], 400.0, random.Random(7))
    result = simulate(with_host(fixed({1: 0.001, 8: 0.001}), host, max_wait_s=0.0), arrivals, warmup_s=5.0)
    rho = rate * d
    expected = d + rho * d / (2 * (1 - rho)) + 0.000001
    assert np.mean(result.classes["batch"].latencies_s) == pytest.approx(expected, rel=0.05)


def test_work_beyond_the_cores_slows_what_starts_then() -> None:
    alone = HostModel(cores=2, loop_in_s=0.0, loop_out_s=0.0)
    crowded = HostModel(cores=2, loop_in_s=0.0, loop_out_s=0.0, background_cores=3.0)  # 1 engine + 3 on 2 cores
    lone = [(0.0, "premium")]
    assert simulate(with_host(fixed({1: 10.0}), alone, max_wait_s=0.0), lone).classes["premium"].latencies_s == (
        pytest.approx([0.010])
    )
    assert simulate(with_host(fixed({1: 10.0}), crowded, max_wait_s=0.0), lone).classes["premium"].latencies_s == (
        pytest.approx([0.020])
    )


def test_on_one_core_a_batch_and_a_loop_segment_share_it_while_both_run() -> None:
    """Processor sharing: what runs beside a batch delays it by its own work, not by the batch's length."""
    host = HostModel(cores=1, loop_in_s=0.001, loop_out_s=0.0)
    one_by_one = with_host(fixed({1: 10.0}), host, max_wait_s=0.0, max_batch_size=1, preferred_batch_sizes=())
    result = simulate(one_by_one, [(0.0, "premium"), (0.002, "standard")])
    # A: loop 0-1 ms alone; its 10 ms batch from 1 ms, alone until 2 ms (1 ms done), then beside B's 1 ms loop
    # segment, both at half speed until 4 ms (1 ms more): 8 ms left alone, done at 12 ms. B: queued at 4 ms,
    # waits for the one slot until 12 ms, then 10 ms alone: 22 ms, 20 ms after its loop took it up at 2 ms.
    got = [result.classes[name].gateway_latencies_s[0] * 1000 for name in ("premium", "standard")]
    assert got == pytest.approx([12.0, 20.0])


def test_contention_slows_work_in_proportion_to_what_runs_beside_it() -> None:
    lone = [(0.0, "premium")]
    quiet = HostModel(cores=2, loop_in_s=0.0, loop_out_s=0.0, contention=1.5)
    half = HostModel(cores=2, loop_in_s=0.0, loop_out_s=0.0, contention=1.5, background_cores=0.5)
    busy = HostModel(cores=2, loop_in_s=0.0, loop_out_s=0.0, contention=1.5, background_cores=1.0)
    for host, expected in ((quiet, 0.010), (half, 0.0125), (busy, 0.015)):
        result = simulate(with_host(fixed({1: 10.0}), host, max_wait_s=0.0), lone)
        assert result.classes["premium"].latencies_s == pytest.approx([expected])


def test_a_batch_holds_its_slot_through_its_python_work_on_the_loop() -> None:
    host = HostModel(cores=8, loop_in_s=0.0, loop_out_s=0.0, engine_gil_s=0.0005)
    one_by_one = with_host(fixed({1: 1.0}), host, max_batch_size=1, preferred_batch_sizes=())
    result = simulate(one_by_one, [(0.0, "premium"), (0.0002, "premium")])
    # first: engine 1 + its Python work 0.5 ms = 1.5 ms; the second (t=0.2 ms) waits for the slot until
    # 1.5 ms, then 1 + 0.5: done at 3.0 ms
    assert sorted(result.classes["premium"].latencies_s) == pytest.approx([0.0015, 0.003 - 0.0002])


@pytest.mark.parametrize(("switch_s", "expected_ms"), [(0.0, [4.0, 4.0]), (0.005, [7.0, 5.0]), (0.002, [6.0, 4.0])])
def test_the_engine_thread_starts_when_the_loop_drains_or_the_switch_interval_forces_it(
    switch_s: float, expected_ms: list[float]
) -> None:
    host = HostModel(cores=8, loop_in_s=0.003, loop_out_s=0.0, gil_switch_s=switch_s)
    one_by_one = with_host(fixed({1: 1.0}), host, max_wait_s=0.0, max_batch_size=1, preferred_batch_sizes=())
    result = simulate(one_by_one, [(0.0, "premium"), (0.0001, "standard")])
    # A: on the loop 0-3 ms, cut at 3 ms while the loop runs B's 3 ms (3-6): its engine thread gets the lock
    # when the loop drains (6 ms) or the switch interval (2 ms: 5 ms), then 1 ms. B: queued at 6 ms, cut when
    # A frees the slot (or at once), 1 ms; both timed from their loop start (A 0, B 3 ms).
    got = [result.classes[name].gateway_latencies_s[0] * 1000 for name in ("premium", "standard")]
    assert got == pytest.approx(expected_ms)


def test_a_client_on_the_host_is_a_one_pod_model() -> None:
    host = HostModel(cores=2, loop_in_s=0.001, loop_out_s=0.001, client_send_s=0.001)
    with pytest.raises(ValueError, match="one pod"):
        simulate(with_host(fixed({1: 1.0}), host), [(0.0, "premium")], pods=2)
    with pytest.raises(ValueError, match="cores"):
        HostModel(cores=0, loop_in_s=0.0, loop_out_s=0.0)
    with pytest.raises(ValueError, match="contention"):
        HostModel(cores=2, loop_in_s=0.0, loop_out_s=0.0, contention=0.5)
