"""The ladder's result file (ladder.json) and its markdown table (ladder.md).

Every number in them was measured in the run the file's fingerprint names; `status` says whether the run
finished (`complete`), ran out of budget (`partial`) or is still running (a partial file written after
each step). Steps and candidates that were not measured say why (`skipped` / `failed` with the reason).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from challenge.gateway import GatewayRun
from challenge.roofline import MatmulRate
from infopt.manifest import BatchPoint, Decision
from infopt.stats import Interval

SCHEMA = "infopt.challenge/1"
STEP_TITLES = {
    "baseline": "FP32 eager, batch 1, one replica",
    "precision": "FP16 / BF16 (TF32 for fp32 on GPU)",
    "batching": "dynamic batching, max batch tuned under the premium SLA",
    "launch_overhead": "launch overhead: CUDA graphs per (batch, length bucket), pinned memory, non-blocking copies",
    "pruning": "pruning (structured heads+FFN, 2:4 semi-structured), kept only if faster within the decision",
    "quantization": "FP8 (Hopper) / INT8 (ONNX Runtime on CPU)",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Accuracy(_Model):
    n: int
    accuracy: Interval  # Wilson
    macro_f1: float
    decision: Decision | None  # paired non-inferiority vs step 1 (None for step 1 itself)
    agreement_with_baseline: float | None


class Point(_Model):
    """One configuration at its serving batch: a model-level measured cell."""

    batch_size: int
    throughput_rps: float
    throughput_rps_min: float
    throughput_rps_max: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_p99_ms_max: float  # worst round: what the SLA plan reads
    predicted_request_p99_ms: float | None  # batching steps: max_wait_ms + worst-round p99 of the batch
    mean_tokens: float  # mean padded width of the timed batches
    mean_attended_tokens: float | None = None  # mean unpadded tokens per request (the roofline's FLOPs)
    peak_memory_mb: float
    cost_per_1k_usd: float


class Roofline(_Model):
    ceiling: str  # which measured matmul rate
    ceiling_flops_per_s: float
    flops_per_request: float  # at the requests' own (unpadded) mean length: padding is not useful work
    achieved_flops_per_s: float
    fraction: float
    best_batch_size: int | None  # the sweep's highest-throughput batch
    best_fraction: float | None  # the fraction reached there


class Candidate(_Model):
    name: str
    engine: dict[str, Any]  # challenge.engines.EngineSpec
    status: Literal["measured", "failed", "skipped"]
    reason: str | None = None
    load_s: float | None = None
    point: Point | None = None  # at the step's batch
    probe: Point | None = None  # precision step: at the probe batch that decides the carried precision
    sweep: list[BatchPoint] = Field(default_factory=list)
    sla_plan: dict[str, Any] | None = None  # infopt.sla.SlaPlan of the batching steps
    accuracy: Accuracy | None = None
    roofline: Roofline | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    kept: bool = False
    verdict: str = ""


class Carried(_Model):
    """The configuration the ladder carries after a step, with its numbers (the cumulative ladder)."""

    candidate: str
    engine: dict[str, Any]
    batching: dict[str, Any] | None  # gateway batching (max_batch_size, max_wait_ms) from step 3 on
    point: Point
    accuracy: Accuracy
    roofline: Roofline | None
    throughput_gain: float  # vs step 1
    cost_gain: float  # step 1 cost per 1k / this cost per 1k
    gateway_throughput_rps: float | None = None
    gateway_p99_ms: float | None = None
    gateway_cost_per_1k_usd: float | None = None


class Step(_Model):
    index: int
    key: str
    title: str
    proposed_by: str
    status: Literal["measured", "skipped", "failed", "cut_by_budget"]
    reason: str | None = None
    candidates: list[Candidate] = Field(default_factory=list)
    kept: str | None = None
    verdict: str = ""
    carried: Carried | None = None
    gateway: GatewayRun | None = None
    seconds: float = 0.0


class Target(_Model):
    name: str
    description: str
    value: float | None
    threshold: float
    met: bool | None  # None: not measured in this run
    source: str  # how the value was computed


class LadderResult(_Model):
    schema_: str = Field(SCHEMA, alias="schema")
    status: Literal["running", "complete", "partial", "failed"]
    device: str
    reduced: bool
    started_at: str
    wall_s: float = 0.0
    budget_s: float
    config: dict[str, Any]
    context: dict[str, Any]  # SLA, wait, cost rate, budget, test split, teacher, agent
    roofline: dict[str, MatmulRate]
    steps: list[Step] = Field(default_factory=list)
    targets: list[Target] = Field(default_factory=list)
    gateway_batched_requests: GatewayRun | None = None  # the final configuration, clients sending k texts each
    spec_comparison: dict[str, Any] = Field(default_factory=dict)
    skipped: list[dict[str, str]] = Field(default_factory=list)
    error: str | None = None
    fingerprint: dict[str, Any]

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _f(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{format(value, spec)}{suffix}"


def ladder_table(result: LadderResult) -> str:
    """The cumulative ladder: one row per step, the configuration carried after it."""
    lines = [
        "| step | carried configuration | batch | model req/s | p50 / p95 / p99 ms (model) | gateway req/s | "
        "gateway p99 ms | USD / 1k req | accuracy [95% CI] | loss vs step 1, pts (upper) | peak MB | "
        "gain x | roofline |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for step in result.steps:
        carried = step.carried
        if carried is None:
            lines.append(f"| {step.index}. {step.key} | {step.status}: {step.reason or step.verdict} |" + " |" * 11)
            continue
        point, accuracy = carried.point, carried.accuracy
        decision = accuracy.decision
        loss = (
            "baseline"
            if decision is None
            else f"{decision.loss.estimate * 100:+.2f} ({decision.loss.high * 100:+.2f})"
            + ("" if decision.within_budget else " over")
        )
        lines.append(
            f"| {step.index}. {step.key} | {carried.candidate} | {point.batch_size} | {point.throughput_rps:,.0f} | "
            f"{point.latency_p50_ms:.2f} / {point.latency_p95_ms:.2f} / {point.latency_p99_ms:.2f} | "
            f"{_f(carried.gateway_throughput_rps, ',.0f')} | {_f(carried.gateway_p99_ms, '.1f')} | "
            f"{point.cost_per_1k_usd:.2e} | {accuracy.accuracy.estimate:.4f} "
            f"[{accuracy.accuracy.low:.4f}, {accuracy.accuracy.high:.4f}] | {loss} | {point.peak_memory_mb:,.0f} | "
            f"{carried.throughput_gain:,.1f} | {_f(carried.roofline.fraction * 100 if carried.roofline else None, '.1f', '%')} |"
        )
    return "\n".join(lines)


def candidates_table(result: LadderResult) -> str:
    lines = [
        "| step | candidate | status | batch | req/s | p99 ms | accuracy | loss upper, pts | decision | kept | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for step in result.steps:
        for item in step.candidates:
            point, accuracy = item.point, item.accuracy
            decision = accuracy.decision if accuracy else None
            lines.append(
                f"| {step.index} | {item.name} | {item.status} | {point.batch_size if point else '-'} | "
                f"{_f(point.throughput_rps if point else None, ',.0f')} | {_f(point.latency_p99_ms if point else None, '.2f')} | "
                f"{_f(accuracy.accuracy.estimate if accuracy else None, '.4f')} | "
                f"{_f(decision.loss.high * 100 if decision else None, '+.2f')} | "
                f"{'-' if decision is None else ('within' if decision.within_budget else 'OVER')} | "
                f"{'yes' if item.kept else 'no'} | {(item.verdict or item.reason or '').replace('|', '/')} |"
            )
    return "\n".join(lines)


def targets_table(result: LadderResult) -> str:
    lines = ["| target | value | threshold | met | how |", "|---|---|---|---|---|"]
    for target in result.targets:
        met = "not measured" if target.met is None else ("yes" if target.met else "no")
        lines.append(
            f"| {target.description} | {_f(target.value, ',.3g')} | {target.threshold:g} | {met} | {target.source} |"
        )
    return "\n".join(lines)


def gateway_lines(result: LadderResult) -> list[str]:
    """Each gateway run's chosen level, with the CPU its gateway processes used there (who ran out of core)."""
    runs = [(f"step {step.index} ({step.key})", step.gateway) for step in result.steps if step.gateway is not None]
    if result.gateway_batched_requests is not None:
        runs.append(("final configuration, batched client requests", result.gateway_batched_requests))
    lines = []
    for label, run in runs:
        if run.chosen is None:
            lines.append(f"- {label}: no level answered ({run.error or 'see levels'})")
            continue
        level = run.levels[run.chosen]
        busiest = sorted(level.gateway_cpu.items(), key=lambda item: -item[1])[:4]
        cpu = ", ".join(f"{role} {share:.2f}" for role, share in busiest) or "not measured"
        lines.append(
            f"- {label}: {run.replicas} gateway(s) x {run.processes} HTTP process(es), "
            f"{run.texts_per_request} text(s) per request, {level.connections} connections, "
            f"{_f(run.throughput_rps, ',.0f')} req/s ({_f(run.texts_per_s, ',.0f')} texts/s), p99 "
            f"{_f(run.latency_p99_ms, '.1f')} ms, {'meets' if run.meets_sla else 'misses'} the SLA; mean engine "
            f"batch {_f(level.mean_batch_size, '.1f')}; gateway CPU (cores): {cpu}"
        )
    return lines


def flops_rate(value: float) -> str:
    """TFLOP/s on GPUs, GFLOP/s below one TFLOP/s (CPUs)."""
    return f"{value / 1e12:,.1f} TFLOP/s" if value >= 1e12 else f"{value / 1e9:,.1f} GFLOP/s"


def render_markdown(result: LadderResult) -> str:
    fingerprint = result.fingerprint
    where = fingerprint.get("gpu_name") or fingerprint.get("cpu_model")
    ceilings = "; ".join(
        f"{name}: {flops_rate(rate.flops_per_s)} ({rate.dtype} {rate.n}^3, median of {rate.runs})"
        for name, rate in result.roofline.items()
    )
    parts = [
        f"# Challenge ladder on {result.device} ({where})",
        "",
        f"Status **{result.status}**{' (reduced)' if result.reduced else ''}; git {str(fingerprint.get('git_sha'))[:10]}, "
        f"{fingerprint.get('timestamp')}, {fingerprint.get('cpu_count')} CPU cores, load average at start "
        f"{fingerprint.get('load_average_start')}; wall {result.wall_s:.0f} s of a {result.budget_s:.0f} s budget.",
        "",
        f"Ceilings measured in this run: {ceilings}.",
        "",
        "## Ladder (cumulative: the configuration carried after each step)",
        "",
        ladder_table(result),
        "",
        "## What each step tried",
        "",
        candidates_table(result),
        "",
        "## Targets",
        "",
        targets_table(result),
        "",
    ]
    gateways = gateway_lines(result)
    if gateways:
        parts += ["## Through the gateway", "", *gateways, ""]
    if result.spec_comparison:
        parts += ["## Against the spec's headline", ""]
        parts += [f"- {key}: {value}" for key, value in result.spec_comparison.items()]
        parts.append("")
    if result.skipped:
        parts += ["## Skipped", ""]
        parts += [f"- {item['what']}: {item['reason']}" for item in result.skipped]
        parts.append("")
    return "\n".join(parts)
