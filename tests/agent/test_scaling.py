"""The scaling node on crafted evidence whose answer is known, refusals included."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from agent.capacity import ServiceCurve
from agent.context import AgentContext, TraceFileTraffic
from agent.contract import NoChange, Recommendation, Refusal
from agent.frontend import FrontEndCpu
from agent.params_edit import apply_changes
from agent.scaling import ENGINE_ONLY_RISK, ScalingInputs, ScalingOptions, inputs_for, recommend_scaling, run
from agent.traffic import TrafficTrace
from infopt.params import BatchingParams, SlaClass

ROOT = Path(__file__).resolve().parents[2]
SLAS = {
    "premium": SlaClass(p99_ms=50, timeout_ms=250, priority=0, weight=8, k8s_priority_value=100000),
    "standard": SlaClass(p99_ms=100, timeout_ms=1000, priority=1, weight=3, k8s_priority_value=10000),
    "batch": SlaClass(p99_ms=None, timeout_ms=30000, priority=2, weight=1, k8s_priority_value=1000),
}
FAST = ScalingOptions(arrivals_per_probe=6000, min_probe_s=5.0)
# One request at a time, exactly 10 ms each: a replica can never do 100 req/s, and M/D/1 puts the rate whose
# p99 stays under standard's 100 ms near 75 req/s (hand-checked: the mean latency at 75 req/s is 25 ms).
MD1 = ServiceCurve((1,), (0.010,), (0.010,), source="crafted: 10 ms per request")
UNBATCHED = BatchingParams(mode="dynamic", max_batch_size=1, max_wait_ms=0)


def trace(steps: list[float], sla_class: str = "standard") -> TrafficTrace:
    return TrafficTrace(step_s=60, rates=[{sla_class: rate} for rate in steps], source="crafted")


def inputs(traffic: TrafficTrace, *, current: tuple[int, int] = (1, 6), curve: ServiceCurve = MD1) -> ScalingInputs:
    return ScalingInputs(
        deployment="textcls-shared",
        variant="int8-dynamic",
        engine="onnxruntime",
        sla_classes=SLAS,
        served_classes=["standard"],
        batching=UNBATCHED,
        queue_capacity=512,
        engine_replicas=1,
        current_min=current[0],
        current_max=current[1],
        hourly_usd=0.096,
        curve=curve,
        traffic=traffic,
        plan_queue_target=1,  # what the simulator puts at the SLA limit here (mean queue ~1.4 at capacity)
    )


# 20 steps: 19 at or below 130 req/s, one spike at 160 req/s. With a per-replica capacity c between 65
# and 96 req/s: min = ceil(130 / c) = 2 and max = ceil(160 * 1.2 / c) = 3, whatever c is in that range.
STEPS = [100.0, 110.0, 120.0, 130.0] * 4 + [90.0, 100.0, 110.0, 160.0]


def test_two_replicas_serve_95_percent_of_the_trace_a_third_for_spikes() -> None:
    outcome = recommend_scaling(inputs(trace(STEPS)), FAST)
    assert isinstance(outcome, Recommendation)
    per_replica = next(m for m in outcome.metrics if m.name == "throughput within SLA, per replica").after
    assert per_replica is not None and 65 < per_replica < 96
    assert {c.path: (c.old, c.new) for c in outcome.changes} == {
        "deployments[textcls-shared].replicas.min": (1, 2),
        "deployments[textcls-shared].replicas.max": (6, 3),
    }
    assert outcome.summary.startswith("2 replicas serve 95% of the trace within SLA (standard p99 <= 100 ms)")
    assert "a 3rd for spikes up to 192 req/s" in outcome.summary
    assert all(prediction.meets for prediction in outcome.sla)
    assert {(p.replicas, p.load_rps) for p in outcome.sla} == {(2, 130.0), (3, 192.0)}
    coverage = next(m for m in outcome.metrics if m.name == "trace steps within SLA on min replicas")
    assert (coverage.before, coverage.after) == (0.0, 95.0)  # 1 replica: no step within SLA; 2: all but the spike
    assert any("max replicas drop from 6 to 3" in risk for risk in outcome.risks)


def test_min_replicas_keep_redundancy_when_capacity_alone_needs_one() -> None:
    outcome = recommend_scaling(inputs(trace([20.0, 30.0, 25.0]), current=(2, 6)), FAST)
    assert isinstance(outcome, Recommendation)
    assert {c.path: c.new for c in outcome.changes} == {"deployments[textcls-shared].replicas.max": 3}
    assert "(1 would by capacity; 2 keep one pod's loss survivable)" in outcome.summary


def test_no_change_when_params_already_match() -> None:
    outcome = recommend_scaling(inputs(trace(STEPS), current=(2, 3)), FAST)
    assert isinstance(outcome, NoChange)
    assert "already match" in outcome.reason


def test_refuses_when_no_replica_count_meets_the_sla() -> None:
    slow = ServiceCurve((1,), (0.150,), (0.200,), source="crafted: 150 ms per request")
    outcome = recommend_scaling(inputs(trace(STEPS), curve=slow), FAST)
    assert isinstance(outcome, Refusal)
    assert outcome.guardrail == "sla"
    assert "no replica count meets the SLA (standard p99 <= 100 ms)" in outcome.reason


def test_refuses_without_traffic_for_the_deployments_classes() -> None:
    outcome = recommend_scaling(inputs(trace(STEPS, sla_class="premium")), FAST)
    assert isinstance(outcome, Refusal)
    assert outcome.guardrail == "evidence"
    assert "has no requests of ['standard']" in outcome.reason


def test_a_plan_target_past_the_sla_limit_adds_the_autoscaling_section_to_params(tmp_path: Path) -> None:
    """The infopt.sla plan's target is the queue a pod can still drain within the SLA, but the HPA compares it
    with the average queue: at 24 a pod would be far past capacity before the HPA adds one."""
    late = replace(inputs(trace(STEPS), current=(2, 3)), plan_queue_target=24)
    outcome = recommend_scaling(late, FAST)
    assert isinstance(outcome, Recommendation)
    (change,) = outcome.changes
    assert (change.path, change.old, change.new) == (
        "deployments[textcls-shared].autoscaling",
        None,
        {"queue_target": 1},
    )
    assert "scales at 24 queued requests per pod (the infopt.sla plan)" in change.why
    assert "only after p99 has passed the SLA" in change.why
    assert outcome.title == "Scale textcls-shared: HPA queue target 24 -> 1"
    target = next(m for m in outcome.metrics if m.name == "HPA queue target per pod")
    assert (target.before, target.after) == (24, 1)
    # the edit lands in the real params.yaml, passes its schema, and is what infra/topology.py then deploys
    edited = apply_changes((ROOT / "params.yaml").read_text(), outcome.changes)
    params = edited.params
    assert "+  autoscaling: {queue_target: 1}" in edited.diff and edited.changed_lines == 1
    assert params.deployment("textcls-shared").autoscaling.queue_target == 1
    assert params.deployment("textcls-premium").autoscaling.queue_target is None


def test_an_explicit_target_is_edited_in_place_and_kept_when_it_matches() -> None:
    explicit = replace(inputs(trace(STEPS), current=(2, 3)), set_queue_target=6, has_autoscaling_section=True)
    outcome = recommend_scaling(explicit, FAST)
    assert isinstance(outcome, Recommendation)
    (change,) = outcome.changes
    assert (change.path, change.old, change.new) == ("deployments[textcls-shared].autoscaling.queue_target", 6, 1)
    assert "params.yaml's autoscaling.queue_target" in change.why
    kept = recommend_scaling(replace(explicit, set_queue_target=1, plan_queue_target=24), FAST)
    assert isinstance(kept, NoChange)  # the explicit target wins over the plan's, as infra/topology.py reads it
    assert "the HPA queue target 1 already match" in kept.reason


def test_node_reads_params_manifest_and_trace_file(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    with path.open("w") as handle:
        for index, rate in enumerate(STEPS):
            handle.write(json.dumps({"t": 60 * index, "sla_class": "premium", "rps": rate * 20}) + "\n")
            handle.write(json.dumps({"t": 60 * index, "sla_class": "standard", "rps": rate}) + "\n")
    context = AgentContext.load(
        ROOT,
        manifest_path=ROOT / "tests" / "fixtures" / "manifest.json",
        traffic=TraceFileTraffic(path),
        deployments=["textcls-premium"],
    )
    (outcome,) = run(context, FAST)
    assert isinstance(outcome, Recommendation | NoChange)
    kinds = {item.kind for item in outcome.evidence}
    assert {"file", "trace", "simulation"} <= kinds
    # no Prometheus: the front end's CPU is the committed measurement for the engine, on resources.cpu '1'
    loop_cpu = next(item for item in outcome.evidence if item.ref == "benchmarks/results/simulator_validation.json")
    assert "/calibration/host/gateway_loop_cpu_ms_per_request: " in loop_cpu.detail
    simulated = next(item for item in outcome.evidence if item.kind == "simulation")
    assert "host model: loop " in simulated.detail and "1 core(s), engine 1 core(s)" in simulated.detail
    # the sweep of the pod's own engine thread count (resources.cpu 1), as infopt.sla plans with
    assert any(
        "variants[int8-dynamic].sweeps[engine=onnxruntime,threads=1,device=cpu]" in item.detail
        for item in outcome.evidence
    )
    if isinstance(outcome, Recommendation):
        assert outcome.target.deployment == "textcls-premium" and outcome.target.sla_class == "premium"


def test_node_refuses_each_deployment_without_a_manifest(tmp_path: Path) -> None:
    context = AgentContext.load(ROOT, manifest_path=tmp_path / "missing.json", traffic=None)
    outcomes = run(context, FAST)
    assert [o.target.deployment for o in outcomes] == ["textcls-premium", "textcls-shared"]
    assert all(isinstance(o, Refusal) and o.guardrail == "evidence" for o in outcomes)
    assert "missing.json: not found; run `dvc repro`" in outcomes[0].reason  # type: ignore[union-attr]


@pytest.mark.parametrize(("coverage", "expected_min"), [(0.5, 2), (1.0, 3)])
def test_coverage_quantile_picks_min_replicas(coverage: float, expected_min: int) -> None:
    # ten steps at 100 req/s and one at 200: the median needs 2 replicas, every step 3 (c in (67, 100))
    options = ScalingOptions(arrivals_per_probe=6000, min_probe_s=5.0, coverage=coverage)
    outcome = recommend_scaling(inputs(trace([100.0] * 10 + [200.0]), current=(1, 10)), options)
    assert isinstance(outcome, Recommendation)
    assert {c.path: c.new for c in outcome.changes}["deployments[textcls-shared].replicas.min"] == expected_min


def test_front_end_cpu_per_request_lowers_capacity_and_adds_replicas() -> None:
    """16 ms of event-loop CPU per request (8 before the queue, 8 after the batch) on a loop of its own (2 cores:
    one for the loop, one for the engine): one loop does at most 1 / 16 ms = 62.5 req/s, below the 65-96 req/s
    the engine alone serves, so 130 req/s need at least 3 pods and the 192 req/s of the spike at least 4."""
    measured = FrontEndCpu(0.016, "crafted.json", "crafted single requests", ())
    engine_only = recommend_scaling(replace(inputs(trace(STEPS)), pod_cores=2.0), FAST)
    with_front_end = recommend_scaling(replace(inputs(trace(STEPS)), pod_cores=2.0, front_end=measured), FAST)
    assert isinstance(engine_only, Recommendation) and isinstance(with_front_end, Recommendation)

    def per_replica(outcome: Recommendation) -> float:
        value = next(m for m in outcome.metrics if m.name == "throughput within SLA, per replica").after
        assert isinstance(value, float)
        return value

    assert 65 < per_replica(engine_only) < 96
    assert 0 < per_replica(with_front_end) < 62.5
    replicas = {c.path.rsplit(".", 1)[1]: c.new for c in with_front_end.changes}
    assert replicas["min"] >= 3
    assert replicas.get("max", 6) >= 4  # today's max (6) may already be enough
    assert "Simulated with 16.000 ms of front-end CPU per request (crafted.json)." in with_front_end.summary
    assert any(
        note.startswith("front end: 16.000 ms CPU per request on the pod's event loop, from crafted.json")
        and "2 core(s) (deployments[textcls-shared].resources.cpu)" in note
        for note in with_front_end.notes
    )
    assert ENGINE_ONLY_RISK not in with_front_end.risks
    assert any(risk.startswith("the front end's CPU per request (16.000 ms)") for risk in with_front_end.risks)
    assert ENGINE_ONLY_RISK in engine_only.risks


def test_without_a_front_end_measurement_the_engine_only_model_and_its_risk_stay(tmp_path: Path) -> None:
    """A checkout without benchmarks/results (and no Prometheus): no front end, said in the notes and the risks."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    path = tmp_path / "trace.jsonl"
    path.write_text(
        "".join(json.dumps({"t": 60 * i, "sla_class": "standard", "rps": r}) + "\n" for i, r in enumerate(STEPS))
    )
    context = AgentContext.load(
        tmp_path,
        manifest_path=ROOT / "tests" / "fixtures" / "manifest.json",
        traffic=TraceFileTraffic(path),
        deployments=["textcls-shared"],
    )
    found = inputs_for(context, "textcls-shared")
    assert found.front_end is None
    assert found.notes == [
        "no committed measurement of the gateway's front-end CPU for engine onnxruntime (known: onnxruntime: "
        "benchmarks/results/simulator_validation.json)"
    ]
    outcome = recommend_scaling(replace(inputs(trace(STEPS)), notes=found.notes), FAST)
    assert isinstance(outcome, Recommendation)
    assert ENGINE_ONLY_RISK in outcome.risks
    assert (
        "front end not modelled: no measured CPU per request, so the simulated pod is its engine alone" in outcome.notes
    )
    assert "front-end CPU" not in outcome.summary
    simulated = next(item for item in outcome.evidence if item.kind == "simulation")
    assert simulated.detail.endswith("; engine only")
    per_replica = next(m for m in outcome.metrics if m.name == "throughput within SLA, per replica").after
    assert per_replica is not None and 65 < per_replica < 96  # the engine-only M/D/1 answer, as before
