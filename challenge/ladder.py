"""`infopt challenge`: the ladder, each step measured, never assumed (docs/challenge.md).

Steps, each building on the configuration the previous ones carried:

1. baseline: the teacher artifact (artifacts/variants/fp32/hf) in the HF eager engine, fp32, batch 1.
2. precision: TF32 (GPU), FP16, BF16 of the same weights; measured at batch 1 (the step's row) and at a
   probe batch; the precision carried on is the fastest at the probe batch within the accuracy decision.
3. dynamic batching: a served-shape sweep; `infopt.sla.plan_sla` picks the largest batch whose
   max_wait + worst-round p99 meets the premium SLA (max_wait from the premium deployment, or from the
   agent's batching recommendation); measured model-level and through the real gateway (N HTTP workers in front of one engine).
4. launch overhead: GPU: the static forward captured in CUDA graphs per (batch, length bucket), pinned
   host memory, non-blocking copies; in the carried precision and in bf16 (the precision is decided again
   where the host no longer bounds the batch), each also with length-bucketed sub-batches (a batch's rows
   grouped by length bucket, challenge/split.py). CPU: no CUDA graphs; the same fp32 model through ONNX Runtime (fused
   graph, no per-op Python dispatch) and the static forward eager are measured; torch.compile is skipped.
5. pruning: the pipeline's structured (heads + FFN) and 2:4 semi-structured variants in the carried
   engine; kept only if faster within the accuracy decision.
6. quantization: FP8 (static forward, float8_e4m3fn matmuls, GPU capability >= 8.9) / INT8 (the pipeline's
   ONNX Runtime int8 variants, CPU).

A candidate is kept only when it is faster (model-level, at its SLA batch) AND its paired loss against
step 1 is within the budget (infopt.stats; model_builds/evaluate.decide). Every step runs in its own try
with the time left in the budget; ladder.json is rewritten after every candidate, so a cut run still
leaves a partial, self-describing result.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from challenge.agent_input import AGENT_FILE, AgentInput, read_agent
from challenge.config import LadderConfig, preset
from challenge.engines import EngineSpec, build_engine, release
from challenge.flops import BertShape
from challenge.gateway import SLA_CLASS, GatewayRun, connection_levels, gateway_spec_for, measure_gateway
from challenge.measure import TestSet, accuracy_of, roofline_of, score, sweep, to_point
from challenge.report import STEP_TITLES, Accuracy, Candidate, Carried, LadderResult, Step, Target, render_markdown
from challenge.roofline import MatmulRate, fp8_matmul_rate, matmul_rate
from infopt.device import resolve_device
from infopt.manifest import Sweep
from infopt.params import BatchingParams, Params, SlaClass, load_params
from infopt.paths import PREPARED_DIR, TOKENIZER_DIR, VARIANTS_DIR
from infopt.sla import plan_sla

GATEWAY_RESERVE_S = {"cuda": 70.0, "cpu": 45.0}  # budget kept back for each final gateway run
STEPS = ("baseline", "precision", "batching", "launch_overhead", "pruning", "quantization")


BASELINE_PREDICTIONS = "baseline_predictions.npz"  # step 1's predicted label per test example, in `out`


class LadderError(RuntimeError):
    """The ladder cannot start (no teacher, no test split, bad params); the message names the file."""


@dataclass(frozen=True)
class LadderOptions:
    device: str = "auto"
    reduced: bool = False
    out: Path | None = None
    params: Path = Path("params.yaml")
    root: Path = Path(".")
    teacher: Path | None = None  # default: artifacts/variants/fp32/hf
    budget_s: float | None = None
    agent_file: Path = AGENT_FILE
    gateway: bool = True
    threads: int | None = None  # CPU engines' intra-op threads (default: params.benchmark.threads[-1])


def default_out(device: str, reduced: bool) -> Path:
    return Path("benchmarks/results/challenge") / (f"{device}-reduced" if reduced else device)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self.reserve = 0.0  # seconds kept for the final gateway run

    def left(self) -> float:
        return self.deadline - time.monotonic() - self.reserve

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass
class Context:
    options: LadderOptions
    config: LadderConfig
    params: Params
    device: str
    root: Path
    out: Path
    test: TestSet
    labels: list[str]
    teacher: Path
    tokenizer: Path
    teacher_shape: BertShape
    sla: SlaClass
    wait_ms: float
    agent: AgentInput
    ceiling: tuple[str, float]
    budget: Budget
    workdir: Path
    result: LadderResult
    baseline_predictions: np.ndarray | None = None
    base: Carried | None = None
    gateway_runs: list[tuple[dict[str, Any], dict[str, Any], GatewayRun]] = field(default_factory=list)

    @property
    def hourly(self) -> float:
        return float(self.params.cost.hourly_usd[self.device])

    def skip(self, what: str, reason: str) -> None:
        self.result.skipped.append({"what": what, "reason": reason})

    def write(self) -> None:
        self.result.wall_s = round(self.budget.elapsed(), 1)
        self.out.mkdir(parents=True, exist_ok=True)
        payload = self.result.model_dump(mode="json", by_alias=True)
        temporary = self.out / "ladder.json.tmp"
        temporary.write_text(json.dumps(payload, indent=2) + "\n")
        temporary.replace(self.out / "ladder.json")
        (self.out / "ladder.md").write_text(render_markdown(self.result))


# ---------------------------------------------------------------------------------------------- setup
def premium_wait(params: Params, agent: AgentInput) -> tuple[float, str, str | None]:
    """max_wait_ms of the premium deployment (or the agent's recommendation for it), its source, the deployment."""
    for deployment in params.deployments:
        classes = {params.tenant(name).sla_class for name in deployment.tenants}
        if SLA_CLASS in classes:
            recommended = agent.batching_for(deployment.name)
            if recommended is not None and recommended.max_wait_ms is not None:
                return recommended.max_wait_ms, f"agent batching recommendation ({recommended.title})", deployment.name
            batching = deployment.batching or params.serving.batching
            return batching.max_wait_ms, f"params deployments[{deployment.name}].batching.max_wait_ms", deployment.name
    return params.serving.batching.max_wait_ms, "params serving.batching.max_wait_ms (no premium deployment)", None


def measure_ceilings(device: str, config: LadderConfig, threads: int | None) -> dict[str, MatmulRate]:
    import torch

    if device == "cuda":
        rates = {"bf16_matmul": matmul_rate("cuda", config.roofline_n, "bfloat16")}
        major, minor = torch.cuda.get_device_capability()
        if (major, minor) >= (8, 9):
            rates["fp8_matmul"] = fp8_matmul_rate(config.roofline_n)
        return rates
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return {"fp32_matmul": matmul_rate("cpu", config.roofline_n, "float32")}
    finally:
        torch.set_num_threads(previous)


def setup(options: LadderOptions) -> Context:
    from infopt.fingerprint import collect
    from infopt.hashing import tree_sha256
    from model_builds.data import read_labels, read_split

    root = options.root
    load_start = [round(value, 2) for value in os.getloadavg()]
    params = load_params(root / options.params)
    device = resolve_device(options.device)
    # CPU: the largest benchmarked thread count; the reduced form (CI, a loaded shared box) uses 1, since an
    # oversubscribed OpenMP pool made a 2-thread torch call ~10x slower than a 1-thread one there.
    default_threads = 1 if options.reduced else params.benchmark.threads[-1]
    threads = (options.threads or default_threads) if device == "cpu" else None
    config = preset(device, options.reduced, params.model.max_seq_len, threads, options.budget_s)
    budget = Budget(config.budget_s)
    teacher = options.teacher or root / VARIANTS_DIR / "fp32" / "hf"
    if not (teacher / "config.json").is_file():
        raise LadderError(f"{teacher}: no config.json; run the pipeline (the variants stage) or pass --teacher")
    prepared = root / PREPARED_DIR
    if not (prepared / "test.jsonl").is_file():
        raise LadderError(f"{prepared}/test.jsonl not found; run the prepare stage")
    labels = read_labels(prepared)
    tokenizer = teacher if (teacher / "tokenizer.json").is_file() else root / TOKENIZER_DIR
    test = TestSet.load(
        read_split(prepared, "test"), tokenizer, params.model.max_seq_len, config.test_limit, params.seed
    )
    agent = read_agent(root / options.agent_file)
    wait_ms, wait_source, deployment = premium_wait(params, agent)
    shape = BertShape.from_config(json.loads((teacher / "config.json").read_text()))
    ceilings = measure_ceilings(device, config, threads)
    ceiling_name = "bf16_matmul" if device == "cuda" else "fp32_matmul"
    fingerprint = collect(device, repo=root).model_dump()
    fingerprint["load_average_start"] = load_start
    out = options.out or root / default_out(device, options.reduced)
    sla = params.sla_classes[SLA_CLASS]
    result = LadderResult(
        status="running",
        device=device,
        reduced=options.reduced,
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        budget_s=config.budget_s,
        config={
            key: (value.model_dump() if hasattr(value, "model_dump") else value)
            for key, value in config.__dict__.items()
        },
        context={
            "sla_class": SLA_CLASS,
            "p99_sla_ms": sla.p99_ms,
            "timeout_ms": sla.timeout_ms,
            "max_wait_ms": wait_ms,
            "max_wait_source": wait_source,
            "premium_deployment": deployment,
            "cost_hourly_usd": params.cost.hourly_usd[device],
            "cost_device": device,
            "max_accuracy_loss": params.evaluate.max_accuracy_loss,
            "confidence": params.evaluate.confidence,
            "test_examples": len(test.labels),
            "test_subsampled_from": test.subsampled_from,
            "max_seq_len": params.model.max_seq_len,
            "teacher": str(teacher),
            "teacher_sha256": tree_sha256(teacher),
            "teacher_shape": {
                "hidden": shape.hidden,
                "layers": len(shape.attention_widths),
                "attention_widths": list(shape.attention_widths),
                "ffn_widths": list(shape.ffn_widths),
                "labels": shape.num_labels,
            },
            "flops_per_sequence_at_max_len": shape.flops(params.model.max_seq_len),
            "flops_formula": "challenge/flops.py: per layer 8*T*H*A + 4*T^2*A + 4*T*H*I, plus 2*H^2 + 2*H*C; "
            "T = the measured mean padded length of the timed batches",
            "agent": agent.model_dump(),
            "threads": threads,
        },
        roofline=ceilings,
        fingerprint=fingerprint,
    )
    return Context(
        options=options,
        config=config,
        params=params,
        device=device,
        root=root,
        out=out,
        test=test,
        labels=labels,
        teacher=teacher,
        tokenizer=tokenizer,
        teacher_shape=shape,
        sla=sla,
        wait_ms=wait_ms,
        agent=agent,
        ceiling=(ceiling_name, ceilings[ceiling_name].flops_per_s),
        budget=budget,
        workdir=Path(tempfile.mkdtemp(prefix="infopt-challenge-")),
        result=result,
    )


# ---------------------------------------------------------------------------------------------- candidates
def spec_for(ctx: Context, variant: str, model_dir: Path, **changes: Any) -> EngineSpec:
    values: dict[str, Any] = {
        "family": "hf",
        "model_dir": str(model_dir),
        "variant": variant,
        "device": ctx.device,
        "threads": ctx.config.threads,
        "pad_id": ctx.test.pad_id,
        **changes,
    }
    return EngineSpec(**values)


def shape_of(spec: EngineSpec, ctx: Context) -> BertShape:
    """The matmul shape of the model an engine serves (an ONNX folder: its variant's hf/ config, else the teacher's)."""
    folder = Path(spec.model_dir)
    for candidate in (folder / "config.json", folder.parent / "hf" / "config.json"):
        if candidate.is_file():
            return BertShape.from_config(json.loads(candidate.read_text()))
    return ctx.teacher_shape


def measure_candidate(
    ctx: Context,
    name: str,
    spec: EngineSpec,
    *,
    sizes: tuple[int, ...],
    step_batch: int | None = None,
    probe_batch: int | None = None,
    plan: bool = False,
    known_accuracy: Accuracy | None = None,
) -> tuple[Candidate, np.ndarray | None]:
    """Build, score, sweep, (plan) and release one engine; a failure becomes the candidate's reason.

    `known_accuracy`: the same engine configuration was scored already (step 3 batches the engine step 2
    carried; accuracy is scored at batch 64 either way), so the test split is not run again."""
    candidate = Candidate(name=name, engine=spec.model_dump(mode="json"), status="measured")
    engine = None
    began = time.monotonic()
    predictions = None
    try:
        engine = build_engine(spec)
        candidate.load_s = round(time.monotonic() - began, 2)
        for attribute in ("capture_seconds", "check_max_abs_diff", "sparse_modules"):
            if hasattr(engine, attribute):
                candidate.details[attribute] = getattr(engine, attribute)
        if hasattr(engine, "forward") and engine.forward is not None:
            candidate.details["fused_gelu"] = engine.forward.fused_gelu
        if known_accuracy is not None:
            candidate.accuracy = known_accuracy
            candidate.details["accuracy"] = "of the same engine configuration, scored in the previous step"
        else:
            predictions = score(engine, ctx.test).argmax(-1)
            candidate.accuracy = accuracy_of(
                predictions,
                ctx.test,
                len(ctx.labels),
                ctx.params.evaluate,
                ctx.params.seed,
                ctx.baseline_predictions,
                spec.family,
            )
        points, cut = sweep(
            engine.infer,
            ctx.test.served_batches(),
            sizes,
            ctx.config.bench,
            ctx.device,
            ctx.hourly,
            ctx.budget.deadline - ctx.budget.reserve,
        )
        candidate.sweep = points
        if cut:
            candidate.details["sweep_cut_by_budget"] = True
        by_batch = {point.batch_size: point for point in points}
        wait = None
        if plan:
            engine_kind = "onnxruntime" if spec.family == "onnxruntime" else "torch"
            measured = Sweep(engine=engine_kind, threads=spec.threads or 1, device=ctx.device, points=points)
            batching = BatchingParams(max_batch_size=max(by_batch), max_wait_ms=ctx.wait_ms)
            sla_plan = plan_sla(measured, SLA_CLASS, ctx.sla, batching)
            candidate.sla_plan = sla_plan.model_dump()
            step_batch, wait = sla_plan.batch_size, ctx.wait_ms
        chosen = by_batch.get(step_batch or sizes[0]) or points[0]
        candidate.point = to_point(chosen, wait)
        if probe_batch is not None and probe_batch in by_batch:
            candidate.probe = to_point(by_batch[probe_batch], None)
        candidate.roofline = roofline_of(shape_of(spec, ctx), candidate.point, points, *ctx.ceiling)
    except Exception as error:  # one candidate's failure is recorded, the ladder goes on
        candidate.status = "failed"
        candidate.reason = f"{type(error).__name__}: {error}"
        candidate.details["traceback"] = traceback.format_exc(limit=6)[-2000:]
    finally:
        if engine is not None:
            release(engine)
        gc.collect()
    candidate.details["seconds"] = round(time.monotonic() - began, 1)
    ctx.write()
    return candidate, predictions


def within_budget(candidate: Candidate) -> bool:
    accuracy = candidate.accuracy
    return accuracy is not None and (accuracy.decision is None or accuracy.decision.within_budget)


def carry(ctx: Context, candidate: Candidate, batching: BatchingParams | None) -> Carried:
    assert candidate.point is not None and candidate.accuracy is not None
    base = ctx.base.point if ctx.base else candidate.point
    return Carried(
        candidate=f"{candidate.name}",
        engine=candidate.engine,
        batching=batching.model_dump() if batching else None,
        point=candidate.point,
        accuracy=candidate.accuracy,
        roofline=candidate.roofline,
        throughput_gain=candidate.point.throughput_rps / base.throughput_rps,
        cost_gain=base.cost_per_1k_usd / candidate.point.cost_per_1k_usd,
    )


def pick(candidates: list[Candidate], incumbent: float, key: Callable[[Candidate], float | None]) -> Candidate | None:
    """The fastest measured candidate within the accuracy decision, if it beats `incumbent`; marks verdicts."""
    best: Candidate | None = None
    for candidate in candidates:
        if candidate.status != "measured":
            continue
        value = key(candidate)
        if not within_budget(candidate):
            candidate.verdict = "not kept: outside the accuracy budget (upper bound of the paired loss)"
        elif value is None:
            candidate.verdict = "not kept: not measured at the deciding batch"
        elif value <= incumbent:
            candidate.verdict = f"not kept: {value:,.0f} req/s is not faster than {incumbent:,.0f}"
        elif best is None or value > (key(best) or 0):
            best = candidate
    for candidate in candidates:
        if candidate is best:
            candidate.kept = True
            candidate.verdict = f"kept: {key(candidate):,.0f} req/s vs {incumbent:,.0f}"
        elif candidate.status == "measured" and not candidate.verdict:
            candidate.verdict = "not kept: slower than the kept candidate"
    return best


# ---------------------------------------------------------------------------------------------- steps
@dataclass
class State:
    """What the ladder carries from step to step."""

    spec: EngineSpec
    candidate: Candidate
    carried: Carried
    batching: BatchingParams | None = None


def step_baseline(ctx: Context, step: Step, state: State | None) -> State:
    config = ctx.config
    spec = spec_for(ctx, "fp32", ctx.teacher, family="hf", precision="fp32")
    candidate, predictions = measure_candidate(
        ctx,
        "fp32 HF eager",
        spec,
        sizes=tuple(sorted({1, config.probe_batch})),
        step_batch=1,
        probe_batch=config.probe_batch,
    )
    step.candidates.append(candidate)
    if candidate.status != "measured" or predictions is None:
        raise LadderError(f"the baseline could not be measured: {candidate.reason}")
    ctx.baseline_predictions = predictions
    # Per-example predictions of the teacher, so another run's teacher can be compared paired on this split
    # (benchmarks/teacher_comparison.py --ladder); a subsampled test split says so in ladder.json's context.
    ctx.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(ctx.out / BASELINE_PREDICTIONS, teacher=predictions.astype(np.int16))
    candidate.kept, candidate.verdict = True, "the baseline"
    carried = carry(ctx, candidate, None)
    ctx.base = carried
    step.kept, step.carried = candidate.name, carried
    return State(spec=spec, candidate=candidate, carried=carried)


def step_precision(ctx: Context, step: Step, state: State) -> State:
    config = ctx.config
    precisions = ["tf32", "fp16", "bf16"] if ctx.device == "cuda" else ["fp16", "bf16"]
    if ctx.device == "cpu":
        ctx.skip("TF32", "TF32 is a tensor-core mode of NVIDIA GPUs; this run's device is cpu")
    sizes = tuple(sorted({1, config.probe_batch}))
    for precision in precisions:
        if ctx.budget.left() < config.min_step_s:
            step.candidates.append(_cut(precision, state.spec.model_copy(update={"precision": precision})))
            continue
        spec = state.spec.model_copy(update={"precision": precision})
        candidate, _ = measure_candidate(
            ctx, f"{precision} HF eager", spec, sizes=sizes, step_batch=1, probe_batch=config.probe_batch
        )
        step.candidates.append(candidate)
    incumbent = state.candidate.probe.throughput_rps if state.candidate.probe else 0.0
    best = pick(step.candidates, incumbent, lambda c: c.probe.throughput_rps if c.probe else None)
    step.verdict = f"precision carried on decided at batch {config.probe_batch} (the batched steps' regime)"
    if best is None:
        step.carried = state.carried
        step.kept = None
        return state
    carried = carry(ctx, best, None)
    step.kept, step.carried = best.name, carried
    return State(spec=EngineSpec.model_validate(best.engine), candidate=best, carried=carried)


def _cut(name: str, spec: EngineSpec) -> Candidate:
    return Candidate(
        name=name, engine=spec.model_dump(mode="json"), status="skipped", reason="cut: the ladder's budget ran out"
    )


def gateway_batching(spec: EngineSpec, batch: int, wait_ms: float) -> BatchingParams:
    # padded graphs run at their captured batch sizes; packed graphs take any row count
    preferred = [size for size in spec.batch_sizes if size <= batch] if spec.graphs and not spec.packed else []
    return BatchingParams(mode="dynamic", max_batch_size=batch, max_wait_ms=wait_ms, preferred_batch_sizes=preferred)


def served_spec(ctx: Context, spec: EngineSpec, batch: int) -> EngineSpec:
    """The engine a gateway serves at max batch `batch`: graphs captured for every size a batch may have."""
    if not spec.graphs:
        return spec
    return spec.model_copy(update={"batch_sizes": ctx.config.graph_sizes(batch)})


def through_gateway(
    ctx: Context, spec: EngineSpec, candidate: Candidate, batching: BatchingParams, texts_per_request: int = 1
) -> GatewayRun | None:
    config = ctx.config
    if not ctx.options.gateway:
        ctx.skip(f"gateway ({candidate.name})", "--no-gateway: only model-level numbers")
        return None
    left = ctx.budget.deadline - time.monotonic()
    needed = config.gateway_warmup_s + config.gateway_duration_s
    if left < needed * (len(config.connection_factors) + 1 + config.gateway_refine) + 20:
        ctx.skip(f"gateway ({candidate.name})", f"cut: {left:.0f} s of budget left")
        return None
    for engine, batch_params, run in ctx.gateway_runs:
        same = engine == spec.model_dump(mode="json") and batch_params == batching.model_dump()
        if same and run.texts_per_request == texts_per_request:
            return run
    assert candidate.point is not None and ctx.sla.p99_ms is not None
    levels = connection_levels(
        candidate.point.throughput_rps, ctx.sla.p99_ms, texts_per_request,
        config.gateway_processes * config.gateway_replicas, config.connection_factors,
    )  # fmt: skip
    gateway_spec = gateway_spec_for(
        spec, batching, ctx.params, labels=ctx.labels, tokenizer_dir=ctx.tokenizer, levels=levels,
        processes=config.gateway_processes,
    )  # fmt: skip
    run = measure_gateway(
        gateway_spec,
        client_processes=config.client_processes,
        connection_levels=levels,
        texts=ctx.test.texts[:512],
        warmup_s=config.gateway_warmup_s,
        duration_s=config.gateway_duration_s,
        ready_timeout_s=min(config.ready_timeout_s, max(30.0, left - needed * len(levels))),
        workdir=ctx.workdir / f"gateway-{len(ctx.gateway_runs)}",
        p99_sla_ms=ctx.sla.p99_ms,
        refine=config.gateway_refine,
        texts_per_request=texts_per_request,
        replicas=config.gateway_replicas,
    )
    ctx.gateway_runs.append((spec.model_dump(mode="json"), batching.model_dump(), run))
    return run


def attach_gateway(ctx: Context, step: Step, state: State) -> None:
    """Measure the carried configuration through the gateway and put the numbers on the step."""
    assert state.batching is not None and step.carried is not None
    spec = served_spec(ctx, state.spec, state.batching.max_batch_size)
    batching = gateway_batching(spec, state.batching.max_batch_size, state.batching.max_wait_ms)
    try:
        run = through_gateway(ctx, spec, state.candidate, batching)
    except Exception as error:  # the model-level numbers stand; the gateway's failure is recorded
        run = None
        ctx.skip(f"gateway ({state.candidate.name})", f"failed: {type(error).__name__}: {str(error)[-1500:]}")
    if run is None:
        return
    step.gateway = run
    if run.throughput_rps:
        step.carried.gateway_throughput_rps = run.throughput_rps
        step.carried.gateway_p99_ms = run.latency_p99_ms
        step.carried.gateway_cost_per_1k_usd = ctx.hourly / 3600.0 / run.throughput_rps * 1000.0


def batched_requests(ctx: Context, state: State) -> GatewayRun | None:
    """The final configuration through the gateway with clients that send k texts per request: the host's
    per-request work (HTTP, auth, framing, the queue) is shared by k rows, the design the issue names beside
    more gateway processes for feeding a GPU from Python. Judged separately from the single-text run."""
    assert state.batching is not None
    spec = served_spec(ctx, state.spec, state.batching.max_batch_size)
    batching = gateway_batching(spec, state.batching.max_batch_size, state.batching.max_wait_ms)
    k = ctx.config.batched_texts_per_request
    try:
        return through_gateway(ctx, spec, state.candidate, batching, texts_per_request=k)
    except Exception as error:  # the single-text numbers stand; this run's failure is recorded
        ctx.skip(f"gateway, {k} texts per request", f"failed: {type(error).__name__}: {str(error)[-1500:]}")
        return None


def step_batching(ctx: Context, step: Step, state: State) -> State:
    config = ctx.config
    candidate, _ = measure_candidate(
        ctx,
        f"{state.candidate.name}, dynamic batching",
        state.spec,
        sizes=config.sweep_batches,
        plan=True,
        known_accuracy=state.candidate.accuracy,
    )
    step.candidates.append(candidate)
    best = pick(
        step.candidates, state.carried.point.throughput_rps, lambda c: c.point.throughput_rps if c.point else None
    )
    if candidate.sla_plan is not None:
        step.verdict = _plan_line(candidate)
    if best is None:
        step.carried = state.carried
        ctx.skip(
            "gateway (step 3)", f"not run: dynamic batching was not kept ({candidate.verdict or candidate.reason})"
        )
        return state
    batching = BatchingParams(max_batch_size=best.point.batch_size, max_wait_ms=ctx.wait_ms)  # type: ignore[union-attr]
    step.kept, step.carried = best.name, carry(ctx, best, batching)
    new = State(spec=state.spec, candidate=best, carried=step.carried, batching=batching)
    attach_gateway(ctx, step, new)
    return new


def _plan_line(candidate: Candidate) -> str:
    plan = candidate.sla_plan or {}
    verdict = "meets" if plan.get("meets_sla") else "MISSES"
    return (
        f"batch {plan.get('batch_size')}: {plan.get('throughput_rps', 0):,.0f} req/s, predicted p99 "
        f"{plan.get('predicted_p99_ms', 0):.1f} ms (wait {plan.get('max_wait_ms')} + engine "
        f"{plan.get('latency_p99_ms', 0):.1f}); {verdict} {plan.get('sla_class')} p99 {plan.get('p99_sla_ms')} ms"
    )


def eager_fallback(spec: EngineSpec) -> EngineSpec:
    """The same model and precision on the eager static forward: no graphs, so no graph-only mode either."""
    changes = {"graphs": False, "batch_sizes": (), "split_lengths": False, "packed": False}
    return EngineSpec.model_validate({**spec.model_dump(), **changes})


def _batched(ctx: Context, step: Step, state: State, candidates: list[tuple[str, EngineSpec]]) -> State:
    """Steps 4-6: sweep + SLA plan per candidate; keep the fastest within the decision if it beats the carried."""
    config = ctx.config
    for name, spec in candidates:
        if ctx.budget.left() < config.min_step_s:
            step.candidates.append(_cut(name, spec))
            continue
        candidate, _ = measure_candidate(ctx, name, spec, sizes=config.sweep_batches, plan=True)
        if candidate.status == "failed" and spec.graphs:
            step.candidates.append(candidate)
            fallback = eager_fallback(spec)
            candidate, _ = measure_candidate(
                ctx, f"{name} (eager, after the graph capture failed)", fallback, sizes=config.sweep_batches, plan=True
            )
        elif candidate.status == "measured" and not within_budget(candidate) and candidate.details.get("fused_gelu"):
            # the epilogue's GELU is the tanh approximation; the model was trained with the exact one
            step.candidates.append(candidate)
            exact = spec.model_copy(update={"fused_gelu": False})
            candidate, _ = measure_candidate(ctx, f"{name}, exact GELU", exact, sizes=config.sweep_batches, plan=True)
        step.candidates.append(candidate)
    best = pick(
        step.candidates, state.carried.point.throughput_rps, lambda c: c.point.throughput_rps if c.point else None
    )
    if best is None:
        step.carried = state.carried  # the same configuration, with its gateway numbers
        return state
    batching = BatchingParams(max_batch_size=best.point.batch_size, max_wait_ms=ctx.wait_ms)  # type: ignore[union-attr]
    step.kept, step.carried = best.name, carry(ctx, best, batching)
    step.verdict = _plan_line(best)
    return State(spec=EngineSpec.model_validate(best.engine), candidate=best, carried=step.carried, batching=batching)


def step_launch(ctx: Context, step: Step, state: State) -> State:
    spec = state.spec
    if ctx.device == "cuda":
        config = ctx.config
        precision = spec.precision if spec.precision in ("fp32", "tf32", "fp16", "bf16") else "bf16"
        # the precision is decided again here: step 2 measured HF eager, whose batches are host-bound
        precisions = [precision] + (["bf16"] if precision in ("fp32", "tf32") else [])
        candidates = []
        for each in precisions:
            graphs = spec.model_copy(
                update={
                    "family": "static",
                    "precision": each,
                    "graphs": True,
                    "batch_sizes": tuple(sorted({*config.sweep_batches, 64})),
                    "length_buckets": config.length_buckets,
                }
            )
            split = graphs.model_copy(
                update={"split_lengths": True, "batch_sizes": config.graph_sizes(max(config.sweep_batches))}
            )
            packed = graphs.model_copy(
                update={"packed": True, "batch_sizes": config.graph_sizes(max(config.sweep_batches))}
            )
            candidates += [
                (f"{each} static forward + CUDA graphs", graphs),
                (f"{each} static forward + CUDA graphs, length-bucketed sub-batches", split),
            ]
            if each in ("fp16", "bf16"):  # flash attention's varlen kernel: half precision only
                candidates.append((f"{each} packed tokens + varlen flash attention + CUDA graphs", packed))
        ctx.skip(
            "torch.compile (GPU)",
            "max-autotune compiles for minutes per shape; CUDA graphs of the static forward instead",
        )
        return _batched(ctx, step, state, candidates)
    ctx.skip("CUDA graphs (CPU)", "CUDA graphs need a CUDA device")
    ctx.skip(
        "torch.compile (CPU)",
        "inductor compiles C++ per shape for minutes on 2 cores; the fused ONNX Runtime graph is measured instead",
    )
    candidates = []
    onnx = ctx.teacher.parent / "onnx"
    if (onnx / "model.onnx").is_file():
        candidates.append(
            (
                "fp32 ONNX Runtime (fused graph)",
                spec.model_copy(update={"family": "onnxruntime", "model_dir": str(onnx), "precision": "fp32"}),
            )
        )
    else:
        ctx.skip("ONNX Runtime fp32 (step 4)", f"{onnx}/model.onnx not found")
    candidates.append((f"{spec.precision} static forward (eager)", spec.model_copy(update={"family": "static"})))
    return _batched(ctx, step, state, candidates)


def built_variants(ctx: Context, kind: str, methods: tuple[str, ...] | None = None) -> list[tuple[str, Path]]:
    """(name, variant folder) of params variants of `kind` (and method) that the pipeline built."""
    from model_builds.variants.record import VariantBuildError, load_variant_build

    found = []
    for variant in ctx.params.variants:
        if not variant.enabled or variant.kind != kind:
            continue
        method = getattr(variant, "method", None)
        if methods is not None and method not in methods:
            if method == "l1_unstructured":
                ctx.skip(variant.name, "unstructured zeros run on dense kernels: no speedup to measure")
            continue
        folder = ctx.root / VARIANTS_DIR / variant.name
        try:
            build = load_variant_build(folder)
        except VariantBuildError as error:
            ctx.skip(variant.name, str(error))
            continue
        if build.status != "built":
            ctx.skip(variant.name, f"not built by the pipeline: {build.skip_reason}")
            continue
        found.append((variant.name, folder))
    return found


def step_pruning(ctx: Context, step: Step, state: State) -> State:
    spec = state.spec
    candidates = []
    for name, folder in built_variants(ctx, "pruned", ("structured_heads_ffn", "semi_structured_2_4")):
        sparse = (folder / "hf" / "sparsity.json").is_file()
        if spec.family == "onnxruntime":
            if sparse:
                ctx.skip(name, "ONNX Runtime has no 2:4 kernels (the carried engine is ONNX Runtime)")
                continue
            candidates.append(
                (f"{name} ONNX Runtime", spec.model_copy(update={"model_dir": str(folder / "onnx"), "variant": name}))
            )
            continue
        update: dict[str, Any] = {"model_dir": str(folder / "hf"), "variant": name}
        if sparse:
            update["linear"] = "sparse24"
            update["family"] = "static"
            update["precision"] = spec.precision if spec.precision in ("fp16", "bf16") else "fp16"
        candidates.append((f"{name} {spec.family}{' 2:4 sparse' if sparse else ''}", spec.model_copy(update=update)))
    if not candidates:
        step.status, step.reason = "skipped", "no structured or 2:4 pruned variant was built"
        step.carried = state.carried
        return state
    return _batched(ctx, step, state, candidates)


def step_quantization(ctx: Context, step: Step, state: State) -> State:
    spec = state.spec
    if ctx.device == "cuda":
        from infopt.engines.fp8_engine import fp8_support

        ctx.skip(
            "INT8 (GPU)", "onnxruntime on the GPU host has no CUDA provider; INT8 torch kernels are not wired here"
        )
        reason = fp8_support("cuda")
        if reason:
            step.status, step.reason, step.carried = "skipped", reason, state.carried
            return state
        base_dir = spec.model_dir if spec.family != "onnxruntime" else str(ctx.teacher)
        fp8 = spec.model_copy(
            update={
                "family": "static",
                "precision": "bf16",
                "linear": "fp8",
                "model_dir": base_dir,
                "graphs": True,
                "batch_sizes": spec.batch_sizes or tuple(sorted({*ctx.config.sweep_batches, 64})),
                "length_buckets": spec.length_buckets or ctx.config.length_buckets,
            }
        )
        return _batched(ctx, step, state, [(f"{Path(base_dir).parent.name} fp8 static forward + CUDA graphs", fp8)])
    ctx.skip("FP8 (CPU)", "FP8 tensor cores need a Hopper/Ada GPU; this run's device is cpu")
    candidates = [
        (f"{name} ONNX Runtime", spec_for(ctx, name, folder / "onnx", family="onnxruntime", precision="int8"))
        for name, folder in built_variants(ctx, "int8_onnx")
    ]
    if not candidates:
        step.status, step.reason, step.carried = "skipped", "no int8 variant was built", state.carried
        return state
    return _batched(ctx, step, state, candidates)


STEP_FUNCTIONS: dict[str, Callable[[Context, Step, Any], State]] = {
    "baseline": step_baseline,
    "precision": step_precision,
    "batching": step_batching,
    "launch_overhead": step_launch,
    "pruning": step_pruning,
    "quantization": step_quantization,
}


# ---------------------------------------------------------------------------------------------- targets
def targets(
    all_steps: list[Step], p99_sla_ms: float | None, ceiling: str, batched: GatewayRun | None = None
) -> list[Target]:
    """The issue's targets, evaluated on the steps as measured (`met` None where a number is missing)."""
    steps = [step for step in all_steps if step.carried is not None]
    if not steps:
        return []
    base = steps[0].carried.point  # type: ignore[union-attr]
    final = steps[-1].carried
    assert final is not None
    decision = final.accuracy.decision
    within = decision is None or decision.within_budget
    final_gateway = next(
        (
            s.gateway
            for s in reversed(steps)
            if s.gateway is not None and s.carried and s.carried.candidate == final.candidate
        ),
        None,
    )
    gw_rps = final.gateway_throughput_rps
    p99 = p99_sla_ms or 0.0
    result = [
        Target(
            name="throughput_200x",
            description="throughput >= 200x step 1 through the gateway, within the accuracy decision, premium p99 <= SLA",
            value=None if gw_rps is None else gw_rps / base.throughput_rps,
            threshold=200.0,
            met=None
            if gw_rps is None
            else (gw_rps / base.throughput_rps >= 200 and within and bool(final_gateway and final_gateway.meets_sla)),
            source="final configuration through the gateway (its fastest level meeting the SLA) / step 1 model-level",
        ),
        Target(
            name="cost_1_200",
            description="cost per 1k requests <= 1/200 of step 1 (gateway), within the accuracy decision",
            value=None
            if final.gateway_cost_per_1k_usd is None
            else base.cost_per_1k_usd / final.gateway_cost_per_1k_usd,
            threshold=200.0,
            met=None
            if final.gateway_cost_per_1k_usd is None
            else (base.cost_per_1k_usd / final.gateway_cost_per_1k_usd >= 200 and within),
            source="infopt.cost.cost_per_1k at the params' hourly rate of the device",
        ),
        Target(
            name="premium_p99_gateway",
            description=f"premium p99 through the gateway <= {p99:g} ms",
            value=final.gateway_p99_ms,
            threshold=p99,
            met=None if final.gateway_p99_ms is None or final_gateway is None else final_gateway.meets_sla,
            source="closed-loop single-text requests, final configuration, chosen level (<= 1% failed)",
        ),
        Target(
            name="gateway_80pct",
            description="through the gateway >= 80% of the model-level throughput of the same configuration",
            value=None if gw_rps is None else gw_rps / final.point.throughput_rps,
            threshold=0.8,
            met=None if gw_rps is None else gw_rps / final.point.throughput_rps >= 0.8,
            source="gateway req/s / model-level req/s at the configuration's SLA batch",
        ),
    ]
    if batched is not None:
        texts = batched.texts_per_s if batched.meets_sla else None
        result.append(
            Target(
                name="gateway_80pct_batched_requests",
                description=f"through the gateway with {batched.texts_per_request} texts per request, within the "
                "SLA: >= 80% of the model-level texts/s of the same configuration",
                value=None if texts is None else texts / final.point.throughput_rps,
                threshold=0.8,
                met=None if texts is None else texts / final.point.throughput_rps >= 0.8,
                source="gateway texts/s at its fastest level meeting the SLA / model-level req/s (a second run; "
                "the single-text target above is judged on its own)",
            )
        )
    dense = [
        c
        for step in all_steps
        for c in step.candidates
        if c.status == "measured"
        and c.roofline
        and c.engine.get("linear") == "dense"
        and c.engine.get("precision") != "int8"
        and within_budget(c)
    ]
    best_dense = max(dense, key=lambda c: c.roofline.best_fraction or 0.0, default=None)  # type: ignore[union-attr]
    result.append(
        Target(
            name="dense_roofline_70",
            description=f"best dense configuration >= 70% of the measured {ceiling} rate at its best batch",
            value=best_dense.roofline.best_fraction if best_dense and best_dense.roofline else None,
            threshold=0.7,
            met=None if best_dense is None else (best_dense.roofline.best_fraction or 0.0) >= 0.7,  # type: ignore[union-attr]
            source=f"{best_dense.name if best_dense else '-'}: sweep's highest-throughput batch x analytic FLOPs / ceiling",
        )
    )
    fp8 = [
        c
        for step in all_steps
        for c in step.candidates
        if c.status == "measured" and c.engine.get("linear") == "fp8" and c.roofline and within_budget(c)
    ]
    best_fp8 = max(fp8, key=lambda c: c.roofline.best_fraction or 0.0, default=None)  # type: ignore[union-attr]
    result.append(
        Target(
            name="fp8_above_bf16_roofline",
            description="FP8 above the measured bf16 matmul rate (dense-equivalent FLOPs at its best batch), within the decision",
            value=best_fp8.roofline.best_fraction if best_fp8 and best_fp8.roofline else None,
            threshold=1.0,
            met=None if best_fp8 is None else (best_fp8.roofline.best_fraction or 0.0) > 1.0,  # type: ignore[union-attr]
            source="fraction of the bf16 ceiling reached by the fp8 candidate",
        )
    )
    return result


def spec_comparison(ctx: Context) -> dict[str, Any]:
    steps = [step for step in ctx.result.steps if step.carried is not None]
    if not steps or ctx.base is None:
        return {}
    base, final = ctx.base, steps[-1].carried
    assert final is not None
    kept = next((c for step in reversed(steps) for c in step.candidates if c.kept and c.sweep), None)
    at_one = next((p for p in kept.sweep if p.batch_size == 1), None) if kept else None
    return {
        "spec_headline": "20x throughput, 12.5x lower cost, 3.3x lower latency",
        "throughput_x_model_level": round(final.throughput_gain, 2),
        "throughput_x_gateway": None
        if final.gateway_throughput_rps is None
        else round(final.gateway_throughput_rps / base.point.throughput_rps, 2),
        "cost_x": round(final.cost_gain, 2),
        "latency_x_batch1_p50": None if at_one is None else round(base.point.latency_p50_ms / at_one.latency_p50_ms, 2),
        "latency_note": "step 1's batch-1 p50 over the final engine's batch-1 p50 (model level)",
    }


# ---------------------------------------------------------------------------------------------- run
def run_ladder(options: LadderOptions, log: Callable[[str], None] = print) -> LadderResult:
    ctx = setup(options)
    log(
        f"challenge: {ctx.device}{' (reduced)' if options.reduced else ''}, {len(ctx.test.labels)} test texts, budget {ctx.config.budget_s:.0f} s -> {ctx.out}"
    )
    ctx.write()
    state: State | None = None
    try:
        for index, key in enumerate(STEPS, start=1):
            step = Step(
                index=index, key=key, title=STEP_TITLES[key], proposed_by=ctx.agent.proposed_by(key), status="measured"
            )
            ctx.result.steps.append(step)
            if index == 4 and ctx.options.gateway:
                runs = 2 if ctx.config.batched_texts_per_request > 1 else 1  # single-text, then k texts a request
                ctx.budget.reserve = GATEWAY_RESERVE_S[ctx.device] * (0.5 if options.reduced else 1.0) * runs
            began = time.monotonic()
            if state is not None and ctx.budget.left() < ctx.config.min_step_s:
                step.status, step.reason, step.carried = "cut_by_budget", "the ladder's budget ran out", state.carried
                ctx.write()
                continue
            try:
                state = STEP_FUNCTIONS[key](ctx, step, state)
            except Exception as error:
                if state is None:
                    raise
                step.status, step.reason = "failed", f"{type(error).__name__}: {error}"
                step.carried = state.carried
            step.seconds = round(time.monotonic() - began, 1)
            log(f"  step {index} {key}: {step.status}, kept {step.kept} ({step.seconds:.0f} s)")
            ctx.write()
        ctx.budget.reserve = 0.0
        # the final configuration through the gateway; later steps that kept nothing share its Carried object
        final_step = next((s for s in reversed(ctx.result.steps) if s.kept and s.index >= 3), None)
        if state is not None and state.batching is not None and final_step is not None and final_step.gateway is None:
            attach_gateway(ctx, final_step, state)
        if state is not None and state.batching is not None and ctx.config.batched_texts_per_request > 1:
            ctx.result.gateway_batched_requests = batched_requests(ctx, state)
        ctx.result.targets = targets(
            ctx.result.steps, ctx.sla.p99_ms, ctx.ceiling[0], ctx.result.gateway_batched_requests
        )
        ctx.result.spec_comparison = spec_comparison(ctx)
        ctx.result.status = "complete" if all(s.status != "cut_by_budget" for s in ctx.result.steps) else "partial"
    except BaseException as error:  # also SIGTERM (raised as KeyboardInterrupt): the file says how far it got
        interrupted = isinstance(error, KeyboardInterrupt)
        ctx.result.status = "partial" if interrupted else "failed"
        ctx.result.error = f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=8)[-3000:]}"
        raise
    finally:
        ctx.result.fingerprint["load_average_end"] = [round(value, 2) for value in os.getloadavg()]
        ctx.write()
        shutil.rmtree(ctx.workdir, ignore_errors=True)
    return ctx.result
