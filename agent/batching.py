"""The batch-tuning node: `max_batch_size` per deployment from the measured sweep, under its SLA class.

For each deployment (agent/contract.py's contract: a plain function from evidence to outcomes):

1. The sweep is the manifest's served-shape sweep for the deployment's engine, device and intra-op threads
   (the one `infopt.sla.plan_sla` plans from). Each measured batch size b is a candidate `max_batch_size`;
   its plan is `plan_sla` with `max_batch_size = b` and the deployment's own `max_wait_ms`, so the prediction
   is the same one the gateway settings and the HPA use: p99 = max_wait_ms + the worst round's p99 at b.
2. The choice is the candidate with the highest median throughput per replica whose plan meets the class's
   p99 (a class without a latency SLA: the highest throughput). `max_wait_ms` is kept: the sweep measures
   batches, not arrivals, so it says nothing about how long a partial batch should wait.
3. **Missing points**: when the SLA boundary falls between two measured sizes (one fits, the next misses) and
   the context can measure (`context.batch_measurer`, the real served-shape benchmark of the deployment's
   artifact: agent/measure.py), the node searches the sizes in between (agent/batch_search.py: bisection for
   the boundary, golden section for the peak), measuring only those it needs; every measured point is cited.
4. The change: `deployments[<name>].batching.max_batch_size` (and `preferred_batch_sizes` trimmed to fit), or
   a `batching` block for a deployment that inherits serving.batching. Nothing changes when the plan already
   holds at the best batch; no batch meeting the SLA is a Refusal (guardrail "sla").

Report lines per measured size read "batch 16: 2,976 req/s, p99 10.6 ms, $8.96e-06/1k (meets premium 50 ms)".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from agent.batch_search import SearchResult, search_batch
from agent.capacity import CurveError, find_sweep, sweep_ref
from agent.context import AgentContext
from agent.contract import (
    Evidence,
    Metric,
    NoChange,
    Outcome,
    ParamChange,
    ParamValue,
    Recommendation,
    Refusal,
    SlaPrediction,
    Target,
)
from agent.evidence import each_deployment
from infopt.deployments import ResolvedDeployment, resolve_deployment
from infopt.manifest import BatchPoint, Sweep, VariantEntry
from infopt.params import BatchingParams, SlaClass
from infopt.sla import SlaPlan, plan_sla

NODE = "batching"
MIN_GAIN = 0.03  # a change must raise per-replica throughput by at least this share (the sweep's noise floor)

Measure = Callable[[int], BatchPoint]


@dataclass(frozen=True)
class BatchingInputs:
    """Everything the node decides from, as plain values (tests craft these directly)."""

    deployment: str
    variant: str
    engine: str
    sla_class: str
    sla: SlaClass
    batching: BatchingParams  # what the deployment runs with today (its override or serving.batching)
    has_override: bool  # the deployment has its own `batching` block
    sweep: Sweep
    sweep_source: str  # manifest file and key
    measure: Measure | None = None  # measures one batch size on the real engine (None: use the sweep only)
    measure_evidence: Callable[[Sequence[int]], list[Evidence]] | None = None  # where those measurements live
    evidence: Sequence[Evidence] = ()


def point_line(point: BatchPoint, wait_ms: float, sla_class: str, sla: SlaClass) -> str:
    """'batch 16: 2,976 req/s, p99 13.6 ms, $8.96e-06/1k (meets premium p99 50 ms)'."""
    p99 = wait_ms + point.latency_p99_ms_max
    verdict = (
        "no latency SLA"
        if sla.p99_ms is None
        else f"{'meets' if p99 <= sla.p99_ms else 'misses'} {sla_class} p99 {sla.p99_ms:g} ms"
    )
    return (
        f"batch {point.batch_size}: {point.throughput_rps:,.0f} req/s, p99 {p99:.1f} ms, "
        f"${point.cost_per_1k_usd:.3g}/1k ({verdict})"
    )


def _plan(sweep: Sweep, inputs: BatchingInputs, max_batch: int) -> SlaPlan:
    preferred = [size for size in inputs.batching.preferred_batch_sizes if size <= max_batch]
    batching = inputs.batching.model_copy(update={"max_batch_size": max_batch, "preferred_batch_sizes": preferred})
    return plan_sla(sweep, inputs.sla_class, inputs.sla, batching)


def _fits(inputs: BatchingInputs) -> Callable[[BatchPoint], bool]:
    wait, sla = inputs.batching.max_wait_ms, inputs.sla.p99_ms
    return lambda point: sla is None or wait + point.latency_p99_ms_max <= sla


def fill_gap(inputs: BatchingInputs) -> SearchResult | None:
    """Search the unmeasured sizes between the largest measured size that fits and the next that misses."""
    if inputs.measure is None or inputs.sla.p99_ms is None:
        return None
    fits = _fits(inputs)
    ordered = sorted(inputs.sweep.points, key=lambda point: point.batch_size)
    fitting = [point.batch_size for point in ordered if fits(point)]
    if not fitting:
        return None
    above = [point.batch_size for point in ordered if point.batch_size > fitting[-1]]
    if not above or above[0] - fitting[-1] < 2:
        return None
    candidates = list(range(fitting[-1], above[0] + 1))
    known = [point for point in ordered if point.batch_size in (fitting[-1], above[0])]
    return search_batch(candidates, inputs.measure, fits, known)


def recommend_batching(inputs: BatchingInputs) -> Outcome:
    target = Target(
        deployment=inputs.deployment, variant=inputs.variant, engine=inputs.engine, sla_class=inputs.sla_class
    )
    where = f"deployments[{inputs.deployment}]"
    evidence = [
        Evidence(kind="file", ref=inputs.sweep_source.split(": ", 1)[0], detail=inputs.sweep_source.split(": ", 1)[-1]),
        *inputs.evidence,
    ]
    searched = fill_gap(inputs)
    sweep = inputs.sweep
    notes: list[str] = []
    if searched is not None and searched.measured:
        extra = [searched.points[size] for size in searched.measured]
        sweep = sweep.model_copy(update={"points": sorted([*sweep.points, *extra], key=lambda p: p.batch_size)})
        evidence.append(
            Evidence(
                kind="measurement",
                ref="agent/measure.py (the served-shape benchmark of model_builds/benchmark.py)",
                detail=f"measured batch sizes {searched.measured} between {min(searched.points)} and "
                f"{max(searched.points)} ({searched.trials} trials; the largest size meeting the SLA is "
                f"{searched.boundary}): "
                + "; ".join(
                    point_line(searched.points[size], inputs.batching.max_wait_ms, inputs.sla_class, inputs.sla)
                    for size in searched.measured
                ),
            )
        )
        if inputs.measure_evidence is not None:
            evidence.extend(inputs.measure_evidence(searched.measured))
        notes.append(
            f"the sweep's gap between measured sizes was searched: {searched.trials} batch sizes measured "
            f"({', '.join(map(str, searched.measured))}), not the whole range"
        )
    for point in sorted(sweep.points, key=lambda p: p.batch_size):
        notes.append(point_line(point, inputs.batching.max_wait_ms, inputs.sla_class, inputs.sla))
    plans = {point.batch_size: _plan(sweep, inputs, point.batch_size) for point in sweep.points}
    meeting = [plan for plan in plans.values() if plan.meets_sla and plan.batch_size == plan.max_batch_size]
    if not meeting:
        smallest = min(plans.values(), key=lambda plan: plan.batch_size)
        return Refusal(
            node=NODE,
            target=target,
            guardrail="sla",
            reason=f"{where}: no measured batch size meets {inputs.sla_class} p99 {inputs.sla.p99_ms:g} ms with "
            f"max_wait_ms {inputs.batching.max_wait_ms:g}: {smallest.describe()}",
            evidence=evidence,
        )
    best = max(meeting, key=lambda plan: (plan.throughput_rps, -plan.batch_size))
    current = _plan(sweep, inputs, inputs.batching.max_batch_size) if sweep.points else None
    fits = _fits(inputs)
    # Under load the batcher forms batches of max_batch_size: a measured size up to it that misses the SLA means
    # the plan (which holds at a smaller batch) and the batcher disagree; that is not "holding".
    too_big = [p for p in sweep.points if p.batch_size <= inputs.batching.max_batch_size and not fits(p)]
    current_ok = current is not None and current.meets_sla and not too_big
    gain = best.throughput_rps / current.throughput_rps - 1 if current is not None and current_ok else float("inf")
    if current_ok and (best.max_batch_size == inputs.batching.max_batch_size or gain < MIN_GAIN):
        assert current is not None
        return NoChange(
            node=NODE,
            target=target,
            reason=f"{where}.batching.max_batch_size {inputs.batching.max_batch_size} already holds within "
            f"{MIN_GAIN:.0%} of the best measured batch under the SLA: {current.describe()}",
            evidence=evidence,
        )
    new_max = best.batch_size
    preferred = [size for size in inputs.batching.preferred_batch_sizes if size <= new_max]
    changes: list[ParamChange] = []
    why = f"the highest throughput per replica whose p99 meets {inputs.sla_class} ({best.describe()})"
    if inputs.has_override:
        changes.append(
            ParamChange(
                path=f"{where}.batching.max_batch_size", old=inputs.batching.max_batch_size, new=new_max, why=why
            )
        )
        if preferred != inputs.batching.preferred_batch_sizes:
            changes.append(
                ParamChange(
                    path=f"{where}.batching.preferred_batch_sizes",
                    old=list(inputs.batching.preferred_batch_sizes),
                    new=list(preferred),
                    why=f"preferred sizes must not exceed max_batch_size {new_max}",
                )
            )
    else:
        block: dict[str, ParamValue] = {
            "mode": inputs.batching.mode,
            "max_batch_size": new_max,
            "max_wait_ms": inputs.batching.max_wait_ms,
        }
        if preferred:
            block["preferred_batch_sizes"] = list(preferred)
        changes.append(ParamChange(path=f"{where}.batching", old=None, new=block, why=why))
    source = inputs.sweep_source
    before = current if current_ok else None
    metrics = [
        Metric(
            name="batching.max_batch_size", before=inputs.batching.max_batch_size, after=new_max, source="params.yaml"
        ),
        Metric(
            name="throughput per replica at the SLA",
            before=round(before.throughput_rps, 1) if before else None,
            after=round(best.throughput_rps, 1),
            unit="req/s",
            source=source,
            better="higher",
        ),
        Metric(
            name=f"predicted p99 {inputs.sla_class}",
            before=round(current.predicted_p99_ms, 2) if current else None,
            after=round(best.predicted_p99_ms, 2),
            unit="ms",
            source="infopt.sla.plan_sla (max_wait_ms + worst round's p99)",
            better="lower",
        ),
        Metric(
            name="cost per 1k requests",
            before=before.cost_per_1k_usd if before else None,
            after=best.cost_per_1k_usd,
            unit="USD",
            source=source,
            better="lower",
        ),
        Metric(
            name="HPA queue target per replica",
            before=current.queue_target if current else None,
            after=best.queue_target,
            source="infopt.sla.plan_sla",
        ),
    ]
    sla = [
        SlaPrediction(
            sla_class=inputs.sla_class,
            load_rps=round(best.throughput_rps, 1),
            replicas=1,
            p99_ms=round(best.predicted_p99_ms, 2),
            sla_p99_ms=inputs.sla.p99_ms,
            what=f"one replica at batch {new_max}, back to back (the sweep's throughput)",
        )
    ]
    if current is not None and not current_ok:
        worst = max(too_big, key=lambda p: p.batch_size) if too_big else None
        today = (
            point_line(worst, inputs.batching.max_wait_ms, inputs.sla_class, inputs.sla)
            if worst is not None
            else current.describe()
        )
        claim = (
            f"{inputs.deployment} misses {inputs.sla_class} today when its batcher fills max_batch_size "
            f"{inputs.batching.max_batch_size} ({today}); max_batch_size {new_max} meets it at "
            f"{best.throughput_rps:,.0f} req/s per replica, p99 {best.predicted_p99_ms:.1f} ms."
        )
    else:
        claim = (
            f"max_batch_size {inputs.batching.max_batch_size} -> {new_max}: {best.throughput_rps:,.0f} req/s per "
            f"replica instead of {before.throughput_rps if before else 0:,.0f} (+{gain:.0%}), p99 "
            f"{best.predicted_p99_ms:.1f} ms within {inputs.sla_class}'s {inputs.sla.p99_ms or 'unbounded'} ms."
        )
    risks = [
        "the sweep times back-to-back batches of test texts; traffic with longer texts pads wider and runs slower",
        "a larger max_batch_size lets a burst form bigger batches: the p99 above is the worst measured round at "
        f"batch {new_max}, plus max_wait_ms",
    ]
    if new_max < inputs.batching.max_batch_size:
        risks[1] = f"a smaller max_batch_size lowers peak throughput per replica to {best.throughput_rps:,.0f} req/s"
    return Recommendation(
        node=NODE,
        topic="batching",
        title=f"Batching of {inputs.deployment}: max_batch_size {inputs.batching.max_batch_size} -> {new_max}",
        summary=claim,
        target=target,
        changes=changes,
        metrics=metrics,
        sla=sla,
        evidence=evidence,
        risks=risks,
        notes=notes,
    )


def inputs_for(context: AgentContext, deployment: str) -> BatchingInputs:
    params = context.params
    resolved: ResolvedDeployment = resolve_deployment(params, context.manifest(), deployment)
    entry = resolved.variant
    if not isinstance(entry, VariantEntry):
        raise CurveError(f"deployments[{deployment}] serves an LLM variant with vLLM: its batching is vLLM's own")
    device = "cuda" if resolved.gpus else "cpu"
    sweep = find_sweep(entry, resolved.engine, resolved.engine_threads, device)
    if sweep is None:
        raise CurveError(
            f"variant {entry.name!r} has no {resolved.engine} sweep with {resolved.engine_threads} thread(s) on {device}"
        )
    manifest_name = context.relative(context.manifest_path)
    spec = params.deployment(deployment)
    evidence = [Evidence(kind="file", ref=context.relative(context.params_path), detail=f"deployments[{deployment}]")]
    if entry.mlflow_run_id:
        evidence.append(Evidence(kind="mlflow_run", ref=entry.mlflow_run_id, detail=f"variant {entry.name}"))
    measurer = context.batch_measurer
    measure = measurer(resolved) if measurer is not None else None
    measure_evidence = partial(measurer.evidence, resolved) if measurer is not None else None
    return BatchingInputs(
        deployment=deployment,
        variant=entry.name,
        engine=resolved.engine,
        sla_class=resolved.sla_class,
        sla=params.sla_classes[resolved.sla_class],
        batching=resolved.batching,
        has_override=spec.batching is not None,
        sweep=sweep,
        sweep_source=f"{manifest_name}: {sweep_ref(entry, sweep)}",
        measure=measure,
        measure_evidence=measure_evidence,
        evidence=evidence,
    )


def run(context: AgentContext) -> list[Outcome]:
    return each_deployment(context, NODE, lambda deployment: recommend_batching(inputs_for(context, deployment)))
