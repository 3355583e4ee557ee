"""The quantization-evaluation node: serve a cheaper variant only when the manifest says it is non-inferior.

For each deployment, every other built variant the deployment's engine can load (quantized, half-precision,
pruned, distilled) is judged on two facts from the manifest, and both must hold:

1. **Accuracy**: the variant's paired non-inferiority decision against the baseline (`Decision.within_budget`:
   the upper bound of the loss interval within `evaluate.max_accuracy_loss`). Never a point estimate. The
   baseline itself needs no decision.
2. **Cost per 1k at the SLA**: `infopt.sla.plan_sla` of the variant's served-shape sweep (the deployment's
   engine, device and threads) with the deployment's batching must meet the SLA class, and its cost per 1k
   requests must be lower than the current variant's plan by at least MIN_SAVING.

The cheapest variant passing both becomes the recommendation (`deployments[<name>].variant`), carrying the
decision for the accuracy guardrail; every variant refused says why (accuracy, SLA or cost). When none is
cheaper, the node says the current variant stays.
"""

from __future__ import annotations

from agent.capacity import find_sweep, sweep_ref
from agent.context import AgentContext
from agent.contract import (
    AccuracyDecision,
    Evidence,
    Interval,
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
from infopt.deployments import ARTIFACT_ENGINE, resolve_deployment
from infopt.manifest import Manifest, VariantEntry
from infopt.sla import SlaError, SlaPlan, plan_sla

NODE = "quantization"
MIN_SAVING = 0.05  # a cheaper variant must save at least this share of the cost per 1k (sweep noise)


def decision_of(manifest: Manifest, entry: VariantEntry, source: str) -> AccuracyDecision:
    """The manifest's decision for `entry` as the accuracy guardrail reads it (the baseline: within budget)."""
    quality = entry.quality
    accuracy = quality.accuracy if quality is not None else None
    common = {
        "variant": entry.name,
        "baseline": manifest.baseline,
        "budget": manifest.max_accuracy_loss,
        "accuracy": accuracy.estimate if accuracy is not None else None,
        "accuracy_interval": Interval(low=accuracy.low, high=accuracy.high, confidence=accuracy.confidence)
        if accuracy is not None
        else None,
    }
    if entry.decision is None:
        if entry.name != manifest.baseline:
            return AccuracyDecision(
                decision="inconclusive", source=f"{source}: variants[{entry.name}].decision is absent", **common
            )
        return AccuracyDecision(decision="within_budget", source=f"{source}: {entry.name} is the baseline", **common)
    decision = entry.decision
    verdict = (
        "within_budget"
        if decision.within_budget
        else ("over_budget" if decision.loss.low > decision.budget else "inconclusive")
    )
    return AccuracyDecision(
        decision=verdict,
        loss=decision.loss.estimate,
        loss_interval=Interval(low=decision.loss.low, high=decision.loss.high, confidence=decision.loss.confidence),
        source=f"{source}: variants[{entry.name}].decision (paired bootstrap on {decision.engine}, McNemar p "
        f"{decision.mcnemar_p:.3g})",
        **{**common, "budget": decision.budget},
    )


def _describe_loss(decision: AccuracyDecision) -> str:
    if decision.loss_interval is None:
        return decision.source
    interval = decision.loss_interval
    return (
        f"paired accuracy loss vs {decision.baseline} {100 * (decision.loss or 0):+.2f} points, "
        f"{interval.confidence:.0%} interval [{100 * interval.low:+.2f}, {100 * interval.high:+.2f}] points, "
        f"budget {100 * decision.budget:.2f} points"
    )


def evaluate(context: AgentContext, deployment: str) -> list[Outcome]:
    params, manifest = context.params, context.manifest()
    resolved = resolve_deployment(params, manifest, deployment)
    where = f"deployments[{deployment}]"
    source = context.relative(context.manifest_path)
    current = resolved.variant
    target = Target(deployment=deployment, variant=current.name, engine=resolved.engine, sla_class=resolved.sla_class)
    if not isinstance(current, VariantEntry) or resolved.sla is None:
        return [
            Refusal(
                node=NODE,
                target=target,
                guardrail="evidence",
                reason=f"{where}: {resolved.engine} serving {current.name!r} has no classifier SLA plan to compare",
            )
        ]
    if not resolved.sla.meets_sla:
        return [
            Refusal(
                node=NODE,
                target=target,
                guardrail="sla",
                reason=f"{where}: the current plan misses its SLA ({resolved.sla.describe()}); fix batching first",
            )
        ]
    device = "cuda" if resolved.gpus else "cpu"
    sla = params.sla_classes[resolved.sla_class]
    base_plan = resolved.sla
    outcomes: list[Outcome] = []
    accepted: list[tuple[VariantEntry, SlaPlan, AccuracyDecision, str]] = []
    for entry in manifest.variants:
        if entry.name == current.name or entry.status != "built":
            continue
        vt = Target(deployment=deployment, variant=entry.name, engine=resolved.engine, sla_class=resolved.sla_class)
        if entry.find_artifact(ARTIFACT_ENGINE[resolved.engine]) is None:
            continue  # the deployment's engine cannot load it (e.g. an ONNX-only int8 variant on torch)
        decision = decision_of(manifest, entry, source)
        if decision.decision != "within_budget":
            outcomes.append(
                Refusal(
                    node=NODE,
                    target=vt,
                    guardrail="accuracy",
                    reason=f"{entry.name} is {decision.decision.replace('_', ' ')}: {_describe_loss(decision)}",
                    evidence=[Evidence(kind="file", ref=source, detail=f"variants[{entry.name}].decision")],
                )
            )
            continue
        sweep = find_sweep(entry, resolved.engine, resolved.engine_threads, device)
        if sweep is None:
            outcomes.append(
                Refusal(
                    node=NODE,
                    target=vt,
                    guardrail="evidence",
                    reason=f"{entry.name} has no {resolved.engine} sweep with {resolved.engine_threads} thread(s) "
                    f"on {device}: its cost at the SLA is unknown",
                )
            )
            continue
        try:
            plan = plan_sla(sweep, resolved.sla_class, sla, resolved.batching)
        except SlaError as error:
            outcomes.append(Refusal(node=NODE, target=vt, guardrail="sla", reason=f"{entry.name}: {error}"))
            continue
        ref = f"{source}: {sweep_ref(entry, sweep)}"
        if not plan.meets_sla:
            outcomes.append(
                Refusal(node=NODE, target=vt, guardrail="sla", reason=f"{entry.name} misses the SLA: {plan.describe()}")
            )
            continue
        saving = 1 - plan.cost_per_1k_usd / base_plan.cost_per_1k_usd
        if saving < MIN_SAVING:
            outcomes.append(
                Refusal(
                    node=NODE,
                    target=vt,
                    guardrail="evidence",
                    reason=f"{entry.name} is within the accuracy budget but does not lower the cost per 1k at the "
                    f"SLA enough: ${plan.cost_per_1k_usd:.3g} vs ${base_plan.cost_per_1k_usd:.3g} today "
                    f"({saving:+.1%}; at least {MIN_SAVING:.0%} needed)",
                    evidence=[Evidence(kind="file", ref=ref.split(": ", 1)[0], detail=ref.split(": ", 1)[1])],
                )
            )
            continue
        accepted.append((entry, plan, decision, ref))
    if not accepted:
        outcomes.insert(
            0,
            NoChange(
                node=NODE,
                target=target,
                reason=f"no other built variant is within the accuracy budget and cheaper per 1k at the SLA than "
                f"{current.name} ({base_plan.describe()})",
            ),
        )
        return outcomes
    entry, plan, decision, ref = min(accepted, key=lambda item: item[1].cost_per_1k_usd)
    current_ref = f"{source}: variants[{current.name}]"
    saving = 1 - plan.cost_per_1k_usd / base_plan.cost_per_1k_usd
    metrics = [
        Metric(
            name="cost per 1k requests at the SLA",
            before=base_plan.cost_per_1k_usd,
            after=plan.cost_per_1k_usd,
            unit="USD",
            source="infopt.sla.plan_sla of each variant's sweep",
            better="lower",
        ),
        Metric(
            name="throughput per replica at the SLA",
            before=round(base_plan.throughput_rps, 1),
            after=round(plan.throughput_rps, 1),
            unit="req/s",
            source=ref,
            better="higher",
        ),
        Metric(
            name=f"predicted p99 {resolved.sla_class}",
            before=round(base_plan.predicted_p99_ms, 2),
            after=round(plan.predicted_p99_ms, 2),
            unit="ms",
            source="infopt.sla.plan_sla",
            better="lower",
        ),
    ]
    if decision.accuracy is not None:
        before_quality = current.quality.accuracy.estimate if current.quality is not None else None
        metrics.append(
            Metric(
                name="accuracy (test split)",
                before=before_quality,
                after=decision.accuracy,
                source=f"{source}: variants[*].quality",
                better="higher",
                after_interval=decision.accuracy_interval,
            )
        )
    evidence = [
        Evidence(kind="file", ref=source, detail=f"variants[{entry.name}].decision: {_describe_loss(decision)}"),
        Evidence(kind="file", ref=source, detail=ref.split(": ", 1)[1]),
        Evidence(
            kind="file", ref=current_ref.split(": ", 1)[0], detail=f"variants[{current.name}]: {base_plan.describe()}"
        ),
    ]
    if entry.mlflow_run_id:
        evidence.append(Evidence(kind="mlflow_run", ref=entry.mlflow_run_id, detail=f"variant {entry.name}"))
    recommendation = Recommendation(
        node=NODE,
        topic="quantization",
        title=f"Serve {entry.name} on {deployment} (was {current.name}): {saving:.0%} lower cost per 1k",
        summary=f"{entry.name} is within the accuracy budget ({_describe_loss(decision)}) and costs "
        f"${plan.cost_per_1k_usd:.3g} per 1k requests at {resolved.sla_class}'s SLA instead of "
        f"${base_plan.cost_per_1k_usd:.3g} ({saving:.0%} less).",
        target=Target(deployment=deployment, variant=entry.name, engine=resolved.engine, sla_class=resolved.sla_class),
        changes=[
            ParamChange(
                path=f"{where}.variant",
                old=current.name,
                new=entry.name,
                why="non-inferior to the baseline and cheaper per 1k at the SLA",
            )
        ],
        metrics=metrics,
        sla=[
            SlaPrediction(
                sla_class=resolved.sla_class,
                load_rps=round(plan.throughput_rps, 1),
                replicas=1,
                p99_ms=round(plan.predicted_p99_ms, 2),
                sla_p99_ms=sla.p99_ms,
                what=f"one replica of {entry.name} at batch {plan.batch_size} (infopt.sla.plan_sla)",
            )
        ],
        accuracy=decision,
        evidence=evidence,
        risks=[
            f"accuracy is measured on the test split ({decision.source}); traffic unlike it may lose more",
            "the artifact changes: pods restart with the new model (a rolling update)",
        ],
        notes=[
            f"{item[0].name}: {item[1].describe()}" for item in sorted(accepted, key=lambda i: i[1].cost_per_1k_usd)
        ],
    )
    return [recommendation, *outcomes]


def run(context: AgentContext) -> list[Outcome]:
    return each_deployment(context, NODE, lambda deployment: evaluate(context, deployment))
