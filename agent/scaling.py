"""Scaling recommendation node: min/max replicas and the HPA queue target of a deployment, from its traffic
and its per-replica capacity at the SLA.

1. Per-replica capacity: the highest total rate (in the trace's class mix) one pod serves with every
   served class within its p99 SLA and failure budget, found by bisection over simulations
   (agent/simulator.py) with the deployment's batching, queue and the engine's service-time curve from the
   manifest's sweep (agent/capacity.py, the one adapter). Pods behind a Service get a random share of
   Poisson traffic, which is Poisson again, so N pods serve N times one pod's capacity.
2. min replicas: enough for the `coverage` quantile of the trace's steps (95%: "2 replicas serve 95% of
   the trace"); max replicas: enough for the trace's peak plus `peak_headroom` ("a 3rd for spikes").
3. Both are checked by simulating the pods at those loads: the SLA predictions the guardrail reads.
4. The HPA queue target: the time-averaged queue per pod when a pod runs at its SLA capacity; above it,
   the pods are past what meets the SLA. The HPA's target today is `autoscaling.queue_target` when set, else
   the infopt.sla plan of the manifest's sweep (infra/topology.py). The node writes
   `deployments[<name>].autoscaling.queue_target` when today's target is above the simulated limit (the HPA
   would scale out only after p99 has passed the SLA) or below half of it (pods added long before they are
   needed); within that band the target stays.

The pod's front end (HTTP, JSON, tokenisation, response encoding on its event loop) takes CPU per request too:
when evidence gives it (agent/frontend.py: Prometheus, else a committed benchmark result) the simulations run
with the simulator's host model, the loop and the engine sharing the pod's `resources.cpu` cores; without it,
the engine-only model, whose p99 is a lower bound where the front end is busy (the recommendation says which).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agent.capacity import ServiceCurve, deployment_service_curve
from agent.context import AgentContext, PrometheusTraffic
from agent.contract import (
    Evidence,
    Metric,
    NoChange,
    Outcome,
    ParamChange,
    Recommendation,
    Refusal,
    SlaPrediction,
    Target,
)
from agent.evidence import each_deployment
from agent.frontend import COMMITTED_MEASUREMENTS, FrontEndCpu, frontend_cpu_from_results, host_model
from agent.prometheus import gateway_cpu_query
from agent.simulator import GatewayModel, SimResult, batching_spec, class_specs, poisson_arrivals, simulate
from agent.traffic import TrafficError, TrafficTrace
from infopt.cost import cost_per_1k
from infopt.deployments import resolve_deployment
from infopt.params import BatchingParams, SlaClass
from infopt.quantity import parse_quantity

NODE = "scaling"
ENGINE_ONLY_RISK = (
    "service times are the engine's batch times from the sweep: HTTP, JSON and tokenisation in the gateway "
    "are not in them (benchmarks/results/simulator_validation.json measures the gap on this machine)"
)


@dataclass(frozen=True)
class ScalingOptions:
    coverage: float = 0.95  # min replicas serve this share of the trace's steps (the spec's "95% of traffic")
    peak_headroom: float = 0.2  # max replicas cover the trace's peak plus this share, for spikes beyond it
    max_failed_fraction: float = 0.01  # rejected or past-deadline requests a class may lose within its SLA
    arrivals_per_probe: int = 20_000  # simulated requests per load probe: ~200 samples above the p99
    min_probe_s: float = 10.0
    max_probe_s: float = 300.0
    tolerance: float = 0.02  # relative precision of the per-replica capacity
    replica_limit: int = 64  # never recommend more than this many replicas
    redundancy_min: int = 2  # min replicas never drop below min(this, today's min): one pod lost still serves
    spike_replicas: int = 1  # max >= min + this, so the HPA always has a replica to add
    seed: int = 0


@dataclass(frozen=True)
class ScalingInputs:
    """Everything the node decides from, as plain values (tests craft these directly)."""

    deployment: str
    variant: str
    engine: str
    sla_classes: Mapping[str, SlaClass]  # all classes (the gateway's queue knows them all)
    served_classes: Sequence[str]  # the classes of the deployment's tenants
    batching: BatchingParams
    queue_capacity: int
    engine_replicas: int
    current_min: int
    current_max: int
    hourly_usd: float  # one replica's price
    curve: ServiceCurve
    traffic: TrafficTrace
    plan_queue_target: int | None = None  # the infopt.sla plan's target (what the HPA uses when none is set)
    set_queue_target: int | None = None  # deployments[<name>].autoscaling.queue_target, when params.yaml sets one
    has_autoscaling_section: bool = False  # params.yaml has deployments[<name>].autoscaling (else it is added)
    evidence: Sequence[Evidence] = ()
    risks: Sequence[str] = ()
    overhead_s: tuple[float, ...] = ()
    front_end: FrontEndCpu | None = None  # measured CPU per request on the pod's event loop; None: engine only
    pod_cores: float = 1.0  # deployments[<name>].resources.cpu: the cores the pod's loop and engine share
    engine_threads: int = 1  # the engine's intra-op threads (resources.cpu, whole cores rounded up)
    notes: Sequence[str] = ()  # how the evidence was gathered (e.g. a source that had nothing)


@dataclass
class _Probe:
    inputs: ScalingInputs
    options: ScalingOptions
    mix: dict[str, float]
    model: GatewayModel
    cache: dict[tuple[float, int], SimResult] = field(default_factory=dict)

    def run(self, total_rps: float, pods: int = 1) -> SimResult:
        key = (round(total_rps, 6), pods)
        if key not in self.cache:
            options = self.options
            duration = min(max(options.arrivals_per_probe / total_rps, options.min_probe_s), options.max_probe_s)
            rng = random.Random(options.seed)
            arrivals = poisson_arrivals([{name: total_rps * share for name, share in self.mix.items()}], duration, rng)
            self.cache[key] = simulate(
                self.model, arrivals, pods=pods, seed=options.seed, warmup_s=min(2.0, duration / 10)
            )
        return self.cache[key]

    def meets(self, total_rps: float, pods: int = 1) -> bool:
        return self.run(total_rps, pods).meets(self.model.classes, self.options.max_failed_fraction)


def _capacity(probe: _Probe) -> float:
    """Bisection for the highest total rate one pod serves within the SLAs (0 if even a trickle misses)."""
    inputs, options = probe.inputs, probe.options
    ceiling = inputs.curve.throughput(inputs.batching.max_batch_size) * inputs.engine_replicas
    low, high = 0.0, ceiling
    if not probe.meets(ceiling * 0.01):
        return 0.0
    low = ceiling * 0.01
    if probe.meets(high):
        return high
    while (high - low) / high > options.tolerance:
        middle = (low + high) / 2
        if probe.meets(middle):
            low = middle
        else:
            high = middle
    return low


def _replicas_for(load: float, per_pod: float) -> int:
    return max(1, math.ceil(load / per_pod - 1e-9))


def _predictions(probe: _Probe, load: float, pods: int, what: str) -> list[SlaPrediction]:
    result = probe.run(load, pods)
    predictions = []
    for name in probe.mix:
        outcome = result.classes[name]
        sla = probe.inputs.sla_classes[name]
        predictions.append(
            SlaPrediction(
                sla_class=name,
                load_rps=round(load, 2),
                replicas=pods,
                p99_ms=round(min(outcome.effective_p99_ms(), 1e9), 2),
                sla_p99_ms=sla.p99_ms,
                failed_fraction=round(outcome.failed_fraction, 4),
                max_failed_fraction=probe.options.max_failed_fraction,
                what=what,
            )
        )
    return predictions


def _coverage(totals: Sequence[float], capacity: float) -> float:
    return sum(1 for total in totals if total <= capacity + 1e-9) / len(totals) if totals else 0.0


def _ordinal(number: int) -> str:
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _front_end_note(inputs: ScalingInputs) -> str:
    """What the simulations assume about the pod's front end, for the notes."""
    front_end = inputs.front_end
    if front_end is None:
        return "front end not modelled: no measured CPU per request, so the simulated pod is its engine alone"
    return (
        f"front end: {front_end.seconds_per_request * 1000:.3f} ms CPU per request on the pod's event loop, from "
        f"{front_end.source} ({front_end.how}); {inputs.pod_cores:g} core(s) "
        f"(deployments[{inputs.deployment}].resources.cpu) shared with the engine's {inputs.engine_threads} "
        "thread(s)"
    )


def _front_end_risk(inputs: ScalingInputs) -> str:
    front_end = inputs.front_end
    if front_end is None:
        return ENGINE_ONLY_RISK
    risk = (
        f"the front end's CPU per request ({front_end.seconds_per_request * 1000:.3f} ms) is {front_end.how}: pods "
        "on other CPUs, with longer texts or under other load spend a different amount; the wait of an in-process "
        "engine for the interpreter lock the event loop holds is not modelled"
    )
    if inputs.pod_cores < inputs.engine_threads + 1:
        risk += (
            f"; the event loop and the engine share {inputs.pod_cores:g} core(s), which the simulator models as "
            "processor sharing (checked against a gateway pinned to one core: "
            "benchmarks/results/simulator_validation_1core.json, where it mostly predicted the p99 low)"
        )
    return risk


def recommend_scaling(inputs: ScalingInputs, options: ScalingOptions = ScalingOptions()) -> Outcome:
    target = Target(
        deployment=inputs.deployment,
        variant=inputs.variant,
        engine=inputs.engine,
        sla_class=min(inputs.served_classes, key=lambda name: inputs.sla_classes[name].priority),
    )
    evidence = list(inputs.evidence) + list(inputs.traffic.evidence)
    if inputs.front_end is not None:
        evidence += inputs.front_end.evidence
    trace = inputs.traffic.for_classes(inputs.served_classes)
    mix = trace.mix()
    if not mix:
        return Refusal(
            node=NODE,
            target=target,
            guardrail="evidence",
            reason=f"the traffic ({trace.source}) has no requests of {list(inputs.served_classes)}, the classes "
            f"{inputs.deployment} serves",
            evidence=evidence,
        )
    model = GatewayModel(
        classes=class_specs(inputs.sla_classes),
        batching=batching_spec(inputs.batching),
        curve=inputs.curve,
        queue_capacity=inputs.queue_capacity,
        engine_replicas=inputs.engine_replicas,
        overhead_s=inputs.overhead_s,
        host=None
        if inputs.front_end is None
        else host_model(inputs.front_end, cores=inputs.pod_cores, engine_threads=inputs.engine_threads),
    )
    probe = _Probe(inputs, options, mix, model)
    per_pod = _capacity(probe)
    slas = (
        ", ".join(
            f"{name} p99 <= {inputs.sla_classes[name].p99_ms:g} ms"
            for name in mix
            if inputs.sla_classes[name].p99_ms is not None
        )
        or f"no p99 SLA; at most {options.max_failed_fraction:.0%} failed"
    )
    if per_pod <= 0:
        trickle = probe.run(inputs.curve.throughput(inputs.batching.max_batch_size) * 0.01)
        worst = max(mix, key=lambda name: trickle.classes[name].effective_p99_ms())
        return Refusal(
            node=NODE,
            target=target,
            guardrail="sla",
            reason=f"no replica count meets the SLA ({slas}): even at 1% of one replica's throughput, {worst} p99 "
            f"is {trickle.classes[worst].effective_p99_ms():.1f} ms with max_batch_size "
            f"{inputs.batching.max_batch_size} and max_wait_ms {inputs.batching.max_wait_ms:g}"
            + (
                ""
                if inputs.front_end is None
                else f" and {inputs.front_end.seconds_per_request * 1000:.3f} ms front-end CPU per request"
            )
            + "; a faster variant or a shorter batch window is needed first",
            evidence=evidence,
        )
    totals = trace.totals()
    covered_load = trace.quantile(options.coverage)
    peak = max(totals)
    spike_load = peak * (1 + options.peak_headroom)
    needed_min = _replicas_for(covered_load, per_pod)
    new_min = max(needed_min, min(inputs.current_min, options.redundancy_min))
    new_max = max(new_min + options.spike_replicas, _replicas_for(spike_load, per_pod))
    risks = list(inputs.risks)
    if new_max > options.replica_limit:
        risks.append(
            f"the trace's peak needs {new_max} replicas; capped at {options.replica_limit} (ScalingOptions.replica_limit)"
        )
        new_max = options.replica_limit
        new_min = min(new_min, new_max)
    # Confirm on the pods themselves (random routing); near the boundary sampling noise can tip it.
    for _ in range(3):
        if probe.meets(covered_load, new_min) or new_min >= new_max:
            break
        new_min += 1
    for _ in range(3):
        if probe.meets(spike_load, new_max) or new_max >= options.replica_limit:
            break
        new_max += 1
    after = _predictions(
        probe, covered_load, new_min, f"at the trace's p{options.coverage * 100:g} load on min replicas"
    )
    after += _predictions(probe, spike_load, new_max, "at the trace's peak + headroom on max replicas")
    capacity_probe = probe.run(per_pod)
    queue_target = max(1, math.floor(capacity_probe.mean_queue_per_pod))
    hpa_target = inputs.set_queue_target if inputs.set_queue_target is not None else inputs.plan_queue_target
    hpa_source = (
        "params.yaml's autoscaling.queue_target" if inputs.set_queue_target is not None else "the infopt.sla plan"
    )

    changes = []
    path = f"deployments[{inputs.deployment}].replicas"
    if new_min != inputs.current_min:
        changes.append(
            ParamChange(
                path=f"{path}.min",
                old=inputs.current_min,
                new=new_min,
                why=f"{options.coverage:.0%} of the trace's steps need {needed_min} within SLA"
                + (f"; {new_min} for redundancy" if new_min > needed_min else ""),
            )
        )
    if new_max != inputs.current_max:
        changes.append(
            ParamChange(
                path=f"{path}.max",
                old=inputs.current_max,
                new=new_max,
                why=f"covers the trace's peak {peak:.1f} req/s + {options.peak_headroom:.0%}"
                + (f", at least min + {options.spike_replicas}" if new_max == new_min + options.spike_replicas else ""),
            )
        )
    retarget = hpa_target is not None and (hpa_target > queue_target or 2 * hpa_target < queue_target)
    if retarget:
        late = (hpa_target or 0) > queue_target
        section = f"deployments[{inputs.deployment}].autoscaling"
        changes.append(
            ParamChange(
                path=f"{section}.queue_target" if inputs.has_autoscaling_section else section,
                old=inputs.set_queue_target if inputs.has_autoscaling_section else None,
                new=queue_target if inputs.has_autoscaling_section else {"queue_target": queue_target},
                why=f"the HPA scales at {hpa_target} queued requests per pod ({hpa_source}); at its SLA capacity a "
                f"replica holds {capacity_probe.mean_queue_per_pod:.2f} on average, so "
                + (
                    "pods would be added only after p99 has passed the SLA"
                    if late
                    else "pods are added long before needed"
                ),
            )
        )
    extra = new_max - new_min
    claim = f"{_plural(new_min, 'replica')} serve{'s' if new_min == 1 else ''} {options.coverage:.0%} of the trace within SLA ({slas})"
    if new_min > needed_min:
        claim += f" ({needed_min} would by capacity; {new_min} keep one pod's loss survivable)"
    spikes = f"spikes up to {spike_load:.0f} req/s (the trace's peak + {options.peak_headroom:.0%})"
    claim += (
        f"; a {_ordinal(new_max)} for {spikes}." if extra == 1 else f"; {extra} more, up to {new_max}, for {spikes}."
    )
    if inputs.front_end is not None:
        claim += (
            f" Simulated with {inputs.front_end.seconds_per_request * 1000:.3f} ms of front-end CPU per request "
            f"({inputs.front_end.source})."
        )
    notes = [
        *inputs.notes,
        _front_end_note(inputs),
        f"one replica serves {per_pod:.1f} req/s within SLA (this mix: "
        + ", ".join(f"{name} {share:.0%}" for name, share in mix.items())
        + f"; max_batch_size {inputs.batching.max_batch_size}, max_wait_ms {inputs.batching.max_wait_ms:g})",
        f"trace: {len(totals)} steps of {trace.step_s:g} s; p{options.coverage * 100:g} {covered_load:.1f} req/s, "
        f"peak {peak:.1f} req/s",
        f"HPA queue target: at its SLA capacity a replica holds {capacity_probe.mean_queue_per_pod:.2f} queued "
        f"requests on average, so a target of {queue_target} per pod"
        + (f" (the HPA uses {hpa_target} today, from {hpa_source})" if hpa_target is not None else ""),
    ]
    if retarget:
        risks.append(
            "an explicit autoscaling.queue_target no longer follows the infopt.sla plan when batching changes; the "
            "scaling node re-checks it on every run"
        )
    evidence.append(
        Evidence(
            kind="simulation",
            ref="agent/simulator.py",
            detail=f"seed {options.seed}, {len(probe.cache)} runs of ~{options.arrivals_per_probe} requests; "
            f"service curve {inputs.curve.source}; "
            + (
                "engine only"
                if model.host is None
                else f"host model: loop {model.host.loop_in_s * 1000:.3f} + {model.host.loop_out_s * 1000:.3f} ms per "
                f"request, {model.host.cores:g} core(s), engine {model.host.engine_cores:g} core(s)"
            ),
        )
    )
    if not changes:
        return NoChange(
            node=NODE,
            target=target,
            reason=f"replicas min {inputs.current_min} / max {inputs.current_max}"
            + (f" and the HPA queue target {hpa_target}" if hpa_target is not None else "")
            + f" already match the evidence: {claim}",
            evidence=evidence,
        )
    replica_changes = [change for change in changes if ".replicas." in change.path]
    before_cov = _coverage(totals, per_pod * inputs.current_min)
    after_cov = _coverage(totals, per_pod * new_min)
    before_min = probe.run(covered_load, inputs.current_min)
    before_max = probe.run(spike_load, inputs.current_max)
    metrics = [
        Metric(name="replicas.min", before=inputs.current_min, after=new_min, source="params.yaml"),
        Metric(name="replicas.max", before=inputs.current_max, after=new_max, source="params.yaml"),
        Metric(
            name="trace steps within SLA on min replicas",
            before=round(100 * before_cov, 1),
            after=round(100 * after_cov, 1),
            unit="%",
            source="simulation",
            better="higher",
        ),
    ]
    for name in mix:
        metrics.append(
            Metric(
                name=f"p99 {name} @ p{options.coverage * 100:g} load, min replicas",
                before=round(min(before_min.classes[name].effective_p99_ms(), 1e9), 2),
                after=next(p.p99_ms for p in after if p.sla_class == name and p.replicas == new_min),
                unit="ms",
                source="simulation",
                better="lower",
            )
        )
        metrics.append(
            Metric(
                name=f"p99 {name} @ peak+{options.peak_headroom:.0%}, max replicas",
                before=round(min(before_max.classes[name].effective_p99_ms(), 1e9), 2),
                after=next(p.p99_ms for p in after if p.sla_class == name and p.replicas == new_max),
                unit="ms",
                source="simulation",
                better="lower",
            )
        )
    metrics.append(
        Metric(
            name=f"cost per 1k @ p{options.coverage * 100:g} load, min replicas",
            before=round(cost_per_1k(inputs.hourly_usd * inputs.current_min, covered_load), 8),
            after=round(cost_per_1k(inputs.hourly_usd * new_min, covered_load), 8),
            unit="USD",
            source="infopt/cost.py",
            better="lower",
        )
    )
    if hpa_target is not None:
        metrics.append(
            Metric(
                name="HPA queue target per pod",
                before=hpa_target,
                after=queue_target if retarget else hpa_target,
                source="simulation (mean queue per pod at SLA capacity)",
            )
        )
    metrics.append(
        Metric(
            name="throughput within SLA, per replica",
            before=round(per_pod, 1),
            after=round(per_pod, 1),
            unit="req/s",
            source="simulation",
        )
    )
    if new_max < inputs.current_max:
        risks.append(
            f"max replicas drop from {inputs.current_max} to {new_max}: traffic above {new_max * per_pod:.0f} req/s "
            f"(the trace peaked at {peak:.1f}) would queue and miss the SLA instead of scaling out"
        )
    risks.append(_front_end_risk(inputs))
    risks.append(
        "the HPA adds replicas only after its metric passes the target (scrape interval + HPA sync period + pod "
        "start-up): spikes shorter than that are served by min replicas"
    )
    return Recommendation(
        node=NODE,
        topic="scaling",
        title=f"Scale {inputs.deployment}: "
        + ", ".join(
            [f"replicas.{c.path.rsplit('.', 1)[1]} {c.old} -> {c.new}" for c in replica_changes]
            + ([f"HPA queue target {hpa_target} -> {queue_target}"] if retarget else [])
        ),
        summary=claim
        if replica_changes
        else f"{claim} HPA queue target {hpa_target} -> {queue_target} per pod ({hpa_source} today).",
        target=target,
        changes=changes,
        metrics=metrics,
        sla=after,
        evidence=evidence,
        risks=risks,
        notes=notes,
    )


def inputs_for(context: AgentContext, deployment: str) -> ScalingInputs:
    """Gather the node's evidence for one deployment from the context (raises on missing evidence)."""
    params = context.params
    manifest = context.manifest()
    resolved = resolve_deployment(params, manifest, deployment)
    manifest_name = context.relative(context.manifest_path)
    curve = deployment_service_curve(resolved, manifest_path=manifest_name)
    served = sorted({tenant.sla_class for tenant in resolved.tenants}, key=lambda n: params.sla_classes[n].priority)
    if context.traffic is None:
        raise TrafficError("no traffic source: give a trace file (--trace) or a Prometheus URL (--prometheus-url)")
    trace = context.traffic(deployment, served)
    spec = params.deployment(deployment)
    front_end, notes = frontend_for(context, deployment, resolved.engine)
    evidence = [
        Evidence(
            kind="file",
            ref=manifest_name,
            detail=curve.source.split(": ", 1)[-1]
            + ": "
            + ", ".join(
                f"batch {b}: p50 {p * 1000:.2f} ms" for b, p in zip(curve.batch_sizes, curve.p50_s, strict=True)
            ),
        ),
        Evidence(kind="file", ref=context.relative(context.params_path), detail=f"deployments[{deployment}]"),
    ]
    if resolved.variant.mlflow_run_id:
        evidence.append(
            Evidence(kind="mlflow_run", ref=resolved.variant.mlflow_run_id, detail=f"variant {resolved.variant.name}")
        )
    return ScalingInputs(
        deployment=deployment,
        variant=resolved.variant.name,
        engine=resolved.engine,
        sla_classes=dict(params.sla_classes),
        served_classes=served,
        batching=resolved.batching,
        queue_capacity=params.serving.queue_capacity,
        engine_replicas=params.serving.engine_replicas,
        current_min=spec.replicas.min,
        current_max=spec.replicas.max,
        hourly_usd=params.cost.hourly_usd["cuda" if resolved.gpus else "cpu"] * max(1, spec.resources.gpu),
        curve=curve,
        traffic=trace,
        plan_queue_target=resolved.sla.queue_target if resolved.sla else None,
        set_queue_target=spec.autoscaling.queue_target,
        has_autoscaling_section="autoscaling" in spec.model_fields_set,
        evidence=evidence,
        front_end=front_end,
        pod_cores=float(parse_quantity(spec.resources.cpu)),
        engine_threads=resolved.engine_threads,
        notes=notes,
    )


def frontend_for(context: AgentContext, deployment: str, engine: str) -> tuple[FrontEndCpu | None, list[str]]:
    """The deployment's front-end CPU per request: from Prometheus when the traffic comes from there and it
    has the gateways' CPU beside their requests, else the committed measurement for the engine, else None; with
    notes on a source that had nothing."""
    notes: list[str] = []
    if isinstance(context.traffic, PrometheusTraffic):
        found = context.traffic.frontend_cpu(deployment)
        if found is not None:
            return found, notes
        notes.append(
            f"{context.traffic.client.base_url} has no samples of "
            f"`{gateway_cpu_query(deployment, context.traffic.rate_window)}` with requests beside them (a gateway "
            "older than infopt_gateway_cpu_seconds_total, or not scraped); the committed measurement is used if any"
        )
    found = frontend_cpu_from_results(context.root, engine)
    if found is None:
        notes.append(
            f"no committed measurement of the gateway's front-end CPU for engine {engine} (known: "
            + ", ".join(f"{name}: {path}" for name, path in COMMITTED_MEASUREMENTS.items())
            + ")"
        )
    return found, notes


def run(context: AgentContext, options: ScalingOptions = ScalingOptions()) -> list[Outcome]:
    return each_deployment(
        context, NODE, lambda deployment: recommend_scaling(inputs_for(context, deployment), options)
    )
