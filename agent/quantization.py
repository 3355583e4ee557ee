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

Variants params.yaml disables (`enabled: false`) were never built. Where the run may run experiments
(`--measure-missing`), the node quantizes and measures them as one DVC experiment of the pipeline up to its
manifest (`build_disabled`) and judges them against the current variant of that same experiment; a winner's
change also enables it, and the infra plan deploys the experiment's manifest. Otherwise it names them.

An INT8 ONNX variant refused **on accuracy** gets one more chance where experiments may run: its untried
RECOVERY_SETTINGS (per-channel scales, more calibration texts) are built as one DVC experiment of the pipeline up
to its manifest (`_retry_candidates`), and the rebuilt variant is judged like any other against the current variant of
that experiment. A winner's change sets those settings; a loser's refusal names the settings, the experiment and
the loss interval that still fails. A refusal on cost or the SLA is not retried: these settings buy accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.capacity import find_sweep, sweep_ref
from agent.context import AgentContext
from agent.contract import (
    AccuracyDecision,
    Evidence,
    Guardrail,
    Interval,
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
from agent.experiments import ExperimentError, ExperimentResult, ExperimentRunner
from agent.int8_recovery import RECOVERY_SETTINGS, recovery_changes, settings_text, written
from infopt.deployments import ARTIFACT_ENGINE, ResolvedDeployment, resolve_deployment
from infopt.manifest import Manifest, ManifestError, VariantEntry, parse_manifest
from infopt.params import Int8OnnxVariant, SlaClass
from infopt.paths import MANIFEST_JSON
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


@dataclass(frozen=True)
class _Candidate:
    entry: VariantEntry
    plan: SlaPlan
    base_plan: SlaPlan  # the current variant's plan measured beside it (the same manifest)
    decision: AccuracyDecision
    source: str  # the manifest it was judged from ("artifacts/manifest.json", "experiment <name>: ...")
    sweep: str  # the sweep's reference in that manifest
    experiment: ExperimentResult | None = None  # the DVC experiment that built it (disabled, or rebuilt)
    experiment_evidence: Evidence | None = None
    changes: tuple[ParamChange, ...] = ()  # the params edits that experiment made to build it
    risks: tuple[str, ...] = ()


def _judge(
    manifest: Manifest,
    entry: VariantEntry,
    source: str,
    resolved: ResolvedDeployment,
    sla: SlaClass,
    base_plan: SlaPlan,
) -> Refusal | tuple[SlaPlan, AccuracyDecision, str] | None:
    """One variant against the deployment's current plan: a refusal naming the failed fact, (plan, decision,
    sweep ref) when it passes both, or None when the deployment's engine cannot load it."""
    target = Target(deployment=resolved.name, variant=entry.name, engine=resolved.engine, sla_class=resolved.sla_class)

    def refuse(guardrail: Guardrail, reason: str, *evidence: Evidence) -> Refusal:
        return Refusal(node=NODE, target=target, guardrail=guardrail, reason=reason, evidence=list(evidence))

    if entry.status != "built":
        return refuse("evidence", f"{entry.name} was not built: {entry.skip_reason or entry.status}")
    if entry.find_artifact(ARTIFACT_ENGINE[resolved.engine]) is None:
        return None  # the deployment's engine cannot load it (e.g. an ONNX-only int8 variant on torch)
    decision = decision_of(manifest, entry, source)
    if decision.decision != "within_budget":
        return refuse(
            "accuracy",
            f"{entry.name} is {decision.decision.replace('_', ' ')}: {_describe_loss(decision)}",
            Evidence(kind="file", ref=source, detail=f"variants[{entry.name}].decision"),
        )
    device = "cuda" if resolved.gpus else "cpu"
    sweep = find_sweep(entry, resolved.engine, resolved.engine_threads, device)
    if sweep is None:
        return refuse(
            "evidence",
            f"{entry.name} has no {resolved.engine} sweep with {resolved.engine_threads} thread(s) on {device}: "
            "its cost at the SLA is unknown",
        )
    try:
        plan = plan_sla(sweep, resolved.sla_class, sla, resolved.batching)
    except SlaError as error:
        return refuse("sla", f"{entry.name}: {error}")
    if not plan.meets_sla:
        return refuse("sla", f"{entry.name} misses the SLA: {plan.describe()}")
    saving = 1 - plan.cost_per_1k_usd / base_plan.cost_per_1k_usd
    if saving < MIN_SAVING:
        return refuse(
            "evidence",
            f"{entry.name} is within the accuracy budget but does not lower the cost per 1k at the SLA enough: "
            f"${plan.cost_per_1k_usd:.3g} vs ${base_plan.cost_per_1k_usd:.3g} today "
            f"({saving:+.1%}; at least {MIN_SAVING:.0%} needed)",
            Evidence(kind="file", ref=source, detail=sweep_ref(entry, sweep)),
        )
    return plan, decision, sweep_ref(entry, sweep)


def build_with(
    runner: ExperimentRunner, changes: dict[str, ParamValue], what: str
) -> tuple[Manifest, ExperimentResult, Evidence]:
    """The pipeline up to its manifest with the params `changes` (`dvc exp run --temp -S <key>=<value> ...
    manifest`) as one DVC experiment, and the manifest it built; reused by name on the same baseline."""
    path = MANIFEST_JSON.as_posix()
    text, result, evidence = runner.run_and_read(changes, "manifest", path, f"{path} with {what}")
    return parse_manifest(text, f"experiment {result.name}: {path}"), result, evidence


def build_disabled(runner: ExperimentRunner, names: list[str]) -> tuple[Manifest, ExperimentResult, Evidence]:
    """Build and measure the variants params.yaml disables (`variants[<name>].enabled=true`) in one experiment."""
    changes: dict[str, ParamValue] = {f"variants[{name}].enabled": True for name in names}
    return build_with(runner, changes, f"{names} built")


def _experiment_candidates(
    context: AgentContext, resolved: ResolvedDeployment, base_plan: SlaPlan, outcomes: list[Outcome]
) -> list[_Candidate]:
    """The variants params.yaml disables: built by an experiment where the run may run them (--measure-missing),
    each judged against the current variant measured in the same experiment; otherwise one refusal each."""
    disabled = [variant.name for variant in context.params.variants if not variant.enabled]
    if not disabled:
        return []
    target = Target(
        deployment=resolved.name, variant=resolved.variant.name, engine=resolved.engine, sla_class=resolved.sla_class
    )
    if context.experiments is None:
        outcomes.append(
            Refusal(
                node=NODE,
                target=target,
                guardrail="evidence",
                reason=f"{disabled} are disabled in params.yaml (variants[*].enabled: false): never built, so their "
                "accuracy and cost are unknown; `infopt agent propose --measure-missing` builds and measures them "
                "as a DVC experiment",
            )
        )
        return []
    try:
        manifest, result, evidence = build_disabled(context.experiments, disabled)
    except (ExperimentError, ManifestError) as error:
        outcomes.append(
            Refusal(
                node=NODE,
                target=target,
                guardrail="evidence",
                reason=f"building the disabled variants {disabled} as a DVC experiment failed: {error}",
            )
        )
        return []
    context.experiment_manifests[result.name] = manifest
    source = f"experiment {result.name}: {MANIFEST_JSON.as_posix()}"
    same_run_base = _same_run_base(context, manifest, resolved, base_plan)
    candidates = []
    for name in disabled:
        try:
            entry = manifest.variant(name)
        except ManifestError as error:
            outcomes.append(Refusal(node=NODE, target=target, guardrail="evidence", reason=str(error)))
            continue
        verdict = _judge(
            manifest, entry, source, resolved, context.params.sla_classes[resolved.sla_class], same_run_base
        )
        if isinstance(verdict, Refusal):
            outcomes.append(verdict.model_copy(update={"evidence": [*verdict.evidence, evidence]}))
        elif verdict is not None:
            plan, decision, sweep = verdict
            enable = ParamChange(
                path=f"variants[{name}].enabled",
                old=False,
                new=True,
                why=f"built and measured by DVC experiment {result.name}; the PR's `dvc repro` builds it",
            )
            risk = (
                f"{name} is built by the PR's `dvc repro` (as experiment {result.name} built it): the pipeline's "
                "run time grows by one variant"
            )
            candidates.append(
                _Candidate(entry, plan, same_run_base, decision, source, sweep, result, evidence, (enable,), (risk,))
            )
    return candidates


def _same_run_base(
    context: AgentContext, manifest: Manifest, resolved: ResolvedDeployment, base_plan: SlaPlan
) -> SlaPlan:
    """The current variant as an experiment's manifest measured it, so both sides of a comparison share the run's
    conditions (the pipeline's plan where the experiment has none meeting the SLA)."""
    try:
        here = resolve_deployment(context.params, manifest, resolved.name)
    except ManifestError:
        return base_plan
    return here.sla if here.sla is not None and here.sla.meets_sla else base_plan


def _int8_refusals(context: AgentContext, outcomes: list[Outcome]) -> dict[int, Int8OnnxVariant]:
    """The positions in `outcomes` of this node's refusals of INT8 ONNX variants, with the variant's params."""
    int8 = {v.name: v for v in context.params.variants if isinstance(v, Int8OnnxVariant)}
    return {
        i: int8[outcome.target.variant]
        for i, outcome in enumerate(outcomes)
        if isinstance(outcome, Refusal) and outcome.node == NODE and outcome.target.variant in int8
    }


def _retry_plan(context: AgentContext, outcomes: list[Outcome]) -> dict[int, tuple[str, dict[str, ParamValue]]]:
    """Which refused INT8 ONNX variants to rebuild, by position in `outcomes`: the name and the -S changes. Only
    a refusal on accuracy with a setting left to try qualifies, and only where experiments may run; every other
    INT8 refusal is rewritten in place to say why it was not retried (or what `--measure-missing` would try)."""
    retries: dict[int, tuple[str, dict[str, ParamValue]]] = {}
    for i, variant in _int8_refusals(context, outcomes).items():
        refusal = outcomes[i]
        assert isinstance(refusal, Refusal)
        settings = recovery_changes(variant, context.params)
        if refusal.guardrail != "accuracy":
            note = "not retried with other INT8 settings: they recover accuracy, and this refusal is not on accuracy"
        elif not settings:
            note = f"no recovery setting ({', '.join(RECOVERY_SETTINGS)}) is left to try"
        elif context.experiments is None:
            note = (
                f"`infopt agent propose --measure-missing` would rebuild it with {settings_text(settings)} "
                "as a DVC experiment of the pipeline up to its manifest"
            )
        else:
            enable = {} if variant.enabled else {f"variants[{variant.name}].enabled": True}  # built disabled
            retries[i] = (variant.name, {**enable, **settings})
            continue
        outcomes[i] = refusal.model_copy(update={"reason": f"{refusal.reason}; {note}"})
    return retries


def _rejudge(
    context: AgentContext,
    resolved: ResolvedDeployment,
    refusal: Refusal,
    name: str,
    settings: dict[str, ParamValue],
    built: tuple[Manifest, ExperimentResult, Evidence],
    base_plan: SlaPlan,
) -> Refusal | _Candidate:
    """One rebuilt variant judged by `_judge` against `base_plan` (the current variant of the same experiment):
    the candidate whose changes set `settings`, or the refusal extended with what was tried and why it still
    fails."""
    manifest, result, evidence = built
    tried = settings_text(settings)
    source = f"experiment {result.name}: {MANIFEST_JSON.as_posix()}"
    try:
        entry = manifest.variant(name)
        verdict = _judge(manifest, entry, source, resolved, context.params.sla_classes[resolved.sla_class], base_plan)
    except ManifestError as error:
        verdict = Refusal(node=NODE, target=refusal.target, guardrail="evidence", reason=str(error))
    if verdict is None:  # the engine loaded the variant as configured; a rebuild that it cannot is a missing fact
        verdict = Refusal(
            node=NODE, target=refusal.target, guardrail="evidence", reason=f"no {resolved.engine} artifact"
        )
    if isinstance(verdict, Refusal):
        return refusal.model_copy(
            update={
                "guardrail": verdict.guardrail,
                "reason": f"{refusal.reason}; rebuilt with {tried} in DVC experiment {result.name}, it still fails: "
                f"{verdict.reason}",
                "evidence": [*refusal.evidence, *verdict.evidence, evidence],
            }
        )
    plan, decision, sweep = verdict
    changes = tuple(
        ParamChange(
            path=path,
            old=written(context.params_text, name, path.rsplit(".", 1)[1]),
            new=value,
            why=f"as configured, {refusal.reason}; rebuilt with {tried} by DVC experiment {result.name}: "
            f"{_describe_loss(decision)}",
        )
        for path, value in settings.items()
    )
    risk = (
        f"{name} is rebuilt by the PR's `dvc repro` with {tried} (as experiment {result.name} built it): every "
        f"deployment serving {name} gets the rebuilt model"
    )
    return _Candidate(entry, plan, base_plan, decision, source, sweep, result, evidence, changes, (risk,))


def _retry_candidates(
    context: AgentContext, resolved: ResolvedDeployment, base_plan: SlaPlan, outcomes: list[Outcome]
) -> list[_Candidate]:
    """INT8 ONNX variants refused on accuracy, rebuilt with their untried RECOVERY_SETTINGS as ONE DVC experiment
    of the pipeline up to its manifest (where the run may run experiments). A variant that now passes becomes a
    candidate and its refusal goes (the candidate's changes tell the story); one that still fails keeps its
    refusal, extended."""
    retries = _retry_plan(context, outcomes)
    if not retries or context.experiments is None:
        return []
    changes = {path: value for _, settings in retries.values() for path, value in settings.items()}
    names = [name for name, _ in retries.values()]
    try:
        built = build_with(context.experiments, changes, f"{names} rebuilt with other INT8 settings")
    except (ExperimentError, ManifestError) as error:
        for i, (_, settings) in retries.items():
            refusal = outcomes[i]
            assert isinstance(refusal, Refusal)
            reason = f"{refusal.reason}; rebuilding it with {settings_text(settings)} as a DVC experiment failed"
            outcomes[i] = refusal.model_copy(update={"reason": f"{reason}: {error}"})
        return []
    context.experiment_manifests[built[1].name] = built[0]
    same_run_base = _same_run_base(context, built[0], resolved, base_plan)
    candidates: list[_Candidate] = []
    for i in sorted(retries, reverse=True):  # from the end, so deleting a refusal keeps the earlier positions
        refusal = outcomes[i]
        assert isinstance(refusal, Refusal)
        verdict = _rejudge(context, resolved, refusal, *retries[i], built, same_run_base)
        if isinstance(verdict, Refusal):
            outcomes[i] = verdict
        else:
            candidates.append(verdict)
            del outcomes[i]
    return candidates[::-1]


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
    sla = params.sla_classes[resolved.sla_class]
    outcomes: list[Outcome] = []
    accepted: list[_Candidate] = []
    for entry in manifest.variants:
        if entry.name == current.name or entry.status != "built":
            continue
        verdict = _judge(manifest, entry, source, resolved, sla, resolved.sla)
        if isinstance(verdict, Refusal):
            outcomes.append(verdict)
        elif verdict is not None:
            plan, decision, sweep = verdict
            accepted.append(_Candidate(entry, plan, resolved.sla, decision, source, sweep))
    accepted += _experiment_candidates(context, resolved, resolved.sla, outcomes)
    accepted += _retry_candidates(context, resolved, resolved.sla, outcomes)
    if not accepted:
        outcomes.insert(
            0,
            NoChange(
                node=NODE,
                target=target,
                reason=f"no other built variant is within the accuracy budget and cheaper per 1k at the SLA than "
                f"{current.name} ({resolved.sla.describe()})",
            ),
        )
        return outcomes
    chosen = min(accepted, key=lambda candidate: candidate.plan.cost_per_1k_usd)
    entry, plan, decision, base_plan = chosen.entry, chosen.plan, chosen.decision, chosen.base_plan
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
            source=f"{chosen.source}: {chosen.sweep}",
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
                source=f"{chosen.source}: variants[*].quality",
                better="higher",
                after_interval=decision.accuracy_interval,
            )
        )
    evidence = [
        Evidence(kind="file", ref=chosen.source, detail=f"variants[{entry.name}].decision: {_describe_loss(decision)}"),
        Evidence(kind="file", ref=chosen.source, detail=chosen.sweep),
        Evidence(kind="file", ref=chosen.source, detail=f"variants[{current.name}]: {base_plan.describe()}"),
    ]
    changes = [
        ParamChange(
            path=f"{where}.variant",
            old=current.name,
            new=entry.name,
            why="non-inferior to the baseline and cheaper per 1k at the SLA",
        )
    ]
    risks = [
        f"accuracy is measured on the test split ({decision.source}); traffic unlike it may lose more",
        "the artifact changes: pods restart with the new model (a rolling update)",
    ]
    if chosen.experiment_evidence is not None:
        evidence.insert(0, chosen.experiment_evidence)
    changes[:0] = chosen.changes
    risks += chosen.risks
    built_by = (
        f" Built by DVC experiment {chosen.experiment.name} with "
        f"{settings_text({change.path: change.new for change in chosen.changes})}."
        if chosen.experiment is not None and chosen.changes
        else ""
    )
    if entry.mlflow_run_id:
        evidence.append(Evidence(kind="mlflow_run", ref=entry.mlflow_run_id, detail=f"variant {entry.name}"))
    recommendation = Recommendation(
        node=NODE,
        topic="quantization",
        title=f"Serve {entry.name} on {deployment} (was {current.name}): {saving:.0%} lower cost per 1k",
        summary=f"{entry.name} is within the accuracy budget ({_describe_loss(decision)}) and costs "
        f"${plan.cost_per_1k_usd:.3g} per 1k requests at {resolved.sla_class}'s SLA instead of "
        f"${base_plan.cost_per_1k_usd:.3g} ({saving:.0%} less).{built_by}",
        target=Target(deployment=deployment, variant=entry.name, engine=resolved.engine, sla_class=resolved.sla_class),
        changes=changes,
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
        risks=risks,
        notes=[
            f"{candidate.entry.name}: {candidate.plan.describe()}"
            + (f" (experiment {candidate.experiment.name})" if candidate.experiment else "")
            for candidate in sorted(accepted, key=lambda candidate: candidate.plan.cost_per_1k_usd)
        ],
        manifest_experiment=chosen.experiment.name if chosen.experiment else None,
    )
    return [recommendation, *outcomes]


def run(context: AgentContext) -> list[Outcome]:
    return each_deployment(context, NODE, lambda deployment: evaluate(context, deployment))
