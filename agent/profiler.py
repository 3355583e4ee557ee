"""The profiler node: name where a deployment's model spends its time, and propose the change that evidence
says removes the most of it.

Evidence: the profile stage's layer table for the deployment's variant (`metrics/profiles/<variant>.json`,
model_builds/profile.py: time per layer and the attention / FFN / embeddings / other split at
`profile.batch_size`, with the top ops) and the manifest's served-shape sweeps. Where that profile is missing
or of another batch size than the deployment serves (`max_batch_size`) and the run may run experiments
(`--measure-missing`), the node profiles the served batch itself: the profile stage as a DVC experiment
narrowed to the one variant (`served_profile`), cited by name in the PR.

1. **Diagnosis**: the largest group of the split and the top op, e.g. "attention takes 50.6% of the time at
   batch 8 (padded width 64) on int8-dynamic (onnxruntime); top op DynamicQuantizeMatMul 31.1%".
2. **Candidate changes** aimed at that bottleneck, each with a saving MEASURED by the sweep at the profiled
   batch size (median batch time, the deployment's threads and device), never a guess:
   - engine (every group): the same variant on the other engine (ONNX Runtime's fused attention and
     SkipLayerNormalization vs torch's SDPA kernels): `deployments[<name>].engine`;
   - precision (FFN / matmul-bound): a lower-precision build of the model (fp16, int8) the deployment's engine
     loads, only if its non-inferiority decision is within budget: `deployments[<name>].variant`;
   - sequence-length cap (attention-bound and batches padded to `model.max_seq_len`): reported, never
     proposed here: the cap changes what the model reads, so it needs the pipeline re-run
     (`dvc exp run -S model.max_seq_len=<n>`) and a new accuracy decision before anyone can cite a saving.
3. The candidate with the largest saving (at least MIN_SAVING) becomes the recommendation, with its SLA plan
   (`infopt.sla.plan_sla`) for the guardrail; otherwise the diagnosis is a NoChange.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.capacity import find_sweep, sweep_ref
from agent.context import AgentContext
from agent.contract import (
    AccuracyDecision,
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
from agent.experiments import ExperimentRunner
from agent.quantization import decision_of
from infopt.deployments import ARTIFACT_ENGINE, resolve_deployment
from infopt.manifest import ManifestError, Sweep, VariantEntry
from infopt.paths import PROFILES_DIR
from infopt.sla import SlaError, plan_sla

NODE = "profiler"
MIN_SAVING = 0.05  # a change must cut the profiled batch's median time by at least this share
GROUPS = ("attention", "ffn", "embeddings", "other")
LOWER_PRECISION = {"fp32": ("fp16", "bf16", "int8", "fp8"), "fp16": ("int8", "fp8"), "bf16": ("int8", "fp8")}
SEQ_CAP_SHARE = 0.9  # batches padded to >= this share of max_seq_len: a cap would shorten them


class ProfileError(ManifestError):
    """The profile the node needs is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class Diagnosis:
    variant: str
    engine: str
    batch_size: int
    seq_len: float
    group: str
    percent: float
    time_ms: float
    top_op: str
    top_op_percent: float
    path: str

    def line(self) -> str:
        return (
            f"{self.group} takes {self.percent:.1f}% of the time at batch {self.batch_size} (padded width "
            f"{self.seq_len:g}) on {self.variant} ({self.engine}); top op {self.top_op} {self.top_op_percent:.1f}%"
        )


def read_profile(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ProfileError(f"{path}: no profile; run the profile stage (`dvc repro profile`)")
    return parse_profile(path.read_text(), str(path))


def parse_profile(text: str, where: str) -> dict[str, Any]:
    try:
        report = json.loads(text)
        for group in GROUPS:
            float(report["split"][group]["percent"])
        int(report["batch_size"])
    except (ValueError, KeyError, TypeError) as error:
        raise ProfileError(f"{where}: not a profile of model_builds/profile.py ({error!r})") from None
    return report


def profile_changes(variant: str, batch_size: int) -> dict[str, ParamValue]:
    return {"profile.batch_size": batch_size, "profile.variants": [variant]}


def served_profile(runner: ExperimentRunner, variant: str, batch_size: int) -> tuple[dict[str, Any], Evidence]:
    """Profile `variant` at the batch size its deployment serves, as a DVC experiment of the profile stage
    narrowed to that variant (`dvc exp run --temp -S profile.batch_size=<b> -S ++profile.variants=[v] profile`),
    read from the experiment's commit; reused by name on the same baseline."""
    path = (PROFILES_DIR / f"{variant}.json").as_posix()
    text, result, evidence = runner.run_and_read(
        profile_changes(variant, batch_size), "profile", path, f"{path} of {variant} at batch {batch_size}"
    )
    return parse_profile(text, f"experiment {result.name}: {path}"), evidence


def profile_at_served_batch(
    context: AgentContext, entry: VariantEntry, served_batch: int
) -> tuple[dict[str, Any], str, list[Evidence]]:
    """The committed profile, or, where the run may run experiments (`context.experiments`) and that profile is
    missing or of another batch size than the deployment serves, a new one at the served batch."""
    path = profile_path(context, entry)
    runner = context.experiments
    try:
        report = read_profile(path)
    except ProfileError:
        if runner is None:
            raise
        report = None
    if report is not None and (runner is None or int(report["batch_size"]) == served_batch):
        return report, context.relative(path), []
    assert runner is not None  # a missing profile without a runner raised above
    fresh, evidence = served_profile(runner, entry.name, served_batch)
    return fresh, evidence.ref, [evidence]


def diagnose(report: dict[str, Any], path: str) -> Diagnosis:
    split = report["split"]
    group = max(GROUPS, key=lambda name: float(split[name]["percent"]))
    top = max(report.get("top_ops") or [{"op": "?", "percent": 0.0}], key=lambda op: float(op["percent"]))
    return Diagnosis(
        variant=str(report["variant"]),
        engine=str(report["engine"]),
        batch_size=int(report["batch_size"]),
        seq_len=float(report["seq_len"]),
        group=group,
        percent=float(split[group]["percent"]),
        time_ms=float(split[group]["time_ms"]),
        top_op=str(top["op"]),
        top_op_percent=float(top["percent"]),
        path=path,
    )


@dataclass(frozen=True)
class Candidate:
    kind: str  # engine | precision
    change: ParamChange
    variant: VariantEntry
    engine: str
    sweep: Sweep
    p50_ms: float  # median batch time at the profiled batch size
    saving: float  # 1 - p50 / current p50
    accuracy: AccuracyDecision | None
    why: str


def _p50_at(sweep: Sweep, batch: int) -> float | None:
    point = sweep.point(batch)
    return point.latency_p50_ms if point is not None else None


def profile_path(context: AgentContext, entry: VariantEntry) -> Path:
    if entry.profile:
        return context.root / entry.profile
    return context.root / PROFILES_DIR / f"{entry.name}.json"


def examine(context: AgentContext, deployment: str) -> Outcome:
    params, manifest = context.params, context.manifest()
    resolved = resolve_deployment(params, manifest, deployment)
    where = f"deployments[{deployment}]"
    current = resolved.variant
    target = Target(deployment=deployment, variant=current.name, engine=resolved.engine, sla_class=resolved.sla_class)
    if not isinstance(current, VariantEntry):
        return Refusal(node=NODE, target=target, guardrail="evidence", reason=f"{where}: LLM variants are not profiled")
    report, source, profiled = profile_at_served_batch(context, current, resolved.batching.max_batch_size)
    diagnosis = diagnose(report, source)
    device = "cuda" if resolved.gpus else "cpu"
    threads = resolved.engine_threads
    manifest_name = context.relative(context.manifest_path)
    batch = diagnosis.batch_size
    evidence = [Evidence(kind="profile", ref=diagnosis.path, detail=diagnosis.line()), *profiled]
    current_sweep = find_sweep(current, resolved.engine, threads, device)
    base = _p50_at(current_sweep, batch) if current_sweep is not None else None
    if current_sweep is None or base is None:
        return Refusal(
            node=NODE,
            target=target,
            guardrail="evidence",
            reason=f"{diagnosis.line()}; but the manifest has no {resolved.engine} sweep point at batch {batch} with "
            f"{threads} thread(s) on {device} to measure a saving against",
            evidence=evidence,
        )
    evidence.append(
        Evidence(
            kind="file",
            ref=manifest_name,
            detail=f"{sweep_ref(current, current_sweep)}: batch {batch} p50 {base:.3f} ms",
        )
    )
    notes = [diagnosis.line()]
    candidates: list[Candidate] = []
    other_engines = [e for e in ("onnxruntime", "torch") if e != resolved.engine and resolved.engine != "vllm"]
    for engine in other_engines:
        if current.find_artifact(ARTIFACT_ENGINE[engine]) is None:
            continue
        sweep = find_sweep(current, engine, threads, device)
        p50 = _p50_at(sweep, batch) if sweep is not None else None
        if sweep is None or p50 is None:
            continue
        candidates.append(
            Candidate(
                kind="engine",
                change=ParamChange(path=f"{where}.engine", old=resolved.engine, new=engine, why=diagnosis.line()),
                variant=current,
                engine=engine,
                sweep=sweep,
                p50_ms=p50,
                saving=1 - p50 / base,
                accuracy=None,
                why=f"{engine} runs the same {current.name} artifact's {diagnosis.group} with other kernels",
            )
        )
    if diagnosis.group == "ffn":
        lower = LOWER_PRECISION.get(current.precision, ())
        for entry in manifest.variants:
            if entry.status != "built" or entry.precision not in lower or entry.kind == current.kind == "distilled":
                continue
            if entry.find_artifact(ARTIFACT_ENGINE[resolved.engine]) is None:
                continue
            decision = decision_of(manifest, entry, manifest_name)
            if decision.decision != "within_budget":
                notes.append(f"{entry.name} ({entry.precision}) would cut FFN time but is {decision.decision}")
                continue
            sweep = find_sweep(entry, resolved.engine, threads, device)
            p50 = _p50_at(sweep, batch) if sweep is not None else None
            if sweep is None or p50 is None:
                continue
            candidates.append(
                Candidate(
                    kind="precision",
                    change=ParamChange(path=f"{where}.variant", old=current.name, new=entry.name, why=diagnosis.line()),
                    variant=entry,
                    engine=resolved.engine,
                    sweep=sweep,
                    p50_ms=p50,
                    saving=1 - p50 / base,
                    accuracy=decision,
                    why=f"{entry.precision} matmuls for the FFN-bound {current.name} ({current.precision})",
                )
            )
    if diagnosis.group == "attention" and diagnosis.seq_len >= SEQ_CAP_SHARE * params.model.max_seq_len:
        notes.append(
            f"batches are padded to {diagnosis.seq_len:g} of max_seq_len {params.model.max_seq_len}: a lower "
            "model.max_seq_len would shorten attention, but it changes what the model reads; measure it as a DVC "
            f"experiment first (`dvc exp run -S model.max_seq_len={int(params.model.max_seq_len * 3 // 4)}`) and "
            "let the accuracy decision judge it"
        )
    for candidate in candidates:
        notes.append(
            f"{candidate.kind} {candidate.change.path.rsplit('.', 1)[1]} -> {candidate.change.new}: batch {batch} p50 "
            f"{candidate.p50_ms:.3f} ms vs {base:.3f} ms ({-candidate.saving:+.1%})"
        )
    useful = [c for c in candidates if c.saving >= MIN_SAVING]
    if not useful:
        return NoChange(
            node=NODE,
            target=target,
            reason=f"{diagnosis.line()}; no change the evidence supports cuts the batch time by {MIN_SAVING:.0%} or "
            f"more ({len(candidates)} candidate(s) measured)",
            evidence=evidence,
        )
    best = max(useful, key=lambda c: c.saving)
    batching = resolved.batching
    sla_class, sla = resolved.sla_class, params.sla_classes[resolved.sla_class]
    try:
        after = plan_sla(best.sweep, sla_class, sla, batching)
    except SlaError as error:
        return Refusal(
            node=NODE, target=target, guardrail="sla", reason=f"{where}.batching: {error}", evidence=evidence
        )
    before = resolved.sla
    evidence.append(
        Evidence(
            kind="file",
            ref=manifest_name,
            detail=f"{sweep_ref(best.variant, best.sweep)}: batch {batch} p50 {best.p50_ms:.3f} ms",
        )
    )
    other = profile_path(context, best.variant)
    if best.kind == "precision" and other.is_file():
        theirs = read_profile(other)
        share = float(theirs["split"][diagnosis.group]["percent"])
        evidence.append(
            Evidence(
                kind="profile",
                ref=context.relative(other),
                detail=f"{diagnosis.group} is {share:.1f}% of {best.variant.name}'s profiled time",
            )
        )
    metrics = [
        Metric(
            name=f"batch {batch} median time",
            before=round(base, 3),
            after=round(best.p50_ms, 3),
            unit="ms",
            source=f"{manifest_name}: sweeps at batch {batch}",
            better="lower",
        ),
        Metric(
            name="throughput per replica at the SLA",
            before=round(before.throughput_rps, 1) if before else None,
            after=round(after.throughput_rps, 1),
            unit="req/s",
            source="infopt.sla.plan_sla",
            better="higher",
        ),
        Metric(
            name="cost per 1k requests at the SLA",
            before=before.cost_per_1k_usd if before else None,
            after=after.cost_per_1k_usd,
            unit="USD",
            source="infopt.sla.plan_sla",
            better="lower",
        ),
    ]
    topic = "engine" if best.kind == "engine" else "precision"
    return Recommendation(
        node=NODE,
        topic=f"profile-{topic}",
        title=f"{deployment}: {best.change.path.rsplit('.', 1)[1]} {best.change.old} -> {best.change.new} "
        f"({best.saving:.0%} less time per batch, {diagnosis.group}-bound)",
        summary=f"{diagnosis.line()[0].upper()}{diagnosis.line()[1:]}. {best.why}: the measured batch {batch} median "
        f"drops from {base:.2f} ms to {best.p50_ms:.2f} ms ({best.saving:.0%} predicted saving).",
        target=target,
        changes=[best.change],
        metrics=metrics,
        sla=[
            SlaPrediction(
                sla_class=sla_class,
                load_rps=round(after.throughput_rps, 1),
                replicas=1,
                p99_ms=round(after.predicted_p99_ms, 2),
                sla_p99_ms=sla.p99_ms,
                what=f"one replica at batch {after.batch_size} (infopt.sla.plan_sla)",
            )
        ],
        accuracy=best.accuracy,
        evidence=evidence,
        risks=[
            f"the profile is of batch {batch}; the saving at other batch sizes follows the sweep, not the profile",
            "profiles of torch and ONNX Runtime time different things (self CPU time vs kernel time): the saving "
            "cited is the sweep's, measured the same way for both",
        ],
        notes=notes,
    )


def run(context: AgentContext) -> list[Outcome]:
    return each_deployment(context, NODE, lambda deployment: examine(context, deployment))
