"""The batch-tuning, quantization-evaluation and profiler nodes on crafted evidence whose answer is known."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent import batching, profiler, quantization
from agent.batch_search import search_batch
from agent.batching import BatchingInputs, point_line, recommend_batching
from agent.context import AgentContext
from agent.contract import NoChange, Recommendation, Refusal
from agent.guardrails import check_accuracy
from agent.params_edit import apply_changes
from agent.proposal import build_proposal
from infopt.manifest import BatchPoint, Decision, Manifest, Sweep, load_manifest
from infopt.params import BatchingParams, SlaClass
from infopt.stats import Interval

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "manifest.json"
HOURLY = 0.096


def sla_class(p99_ms: float | None) -> SlaClass:
    return SlaClass(p99_ms=p99_ms, timeout_ms=250, priority=0, weight=8, k8s_priority_value=100000)


def point(batch: int, p50_ms: float, p99_max_ms: float | None = None, throughput: float | None = None) -> BatchPoint:
    rps = throughput if throughput is not None else batch / (p50_ms / 1000.0)
    p99 = p99_max_ms if p99_max_ms is not None else 1.5 * p50_ms
    return BatchPoint(
        batch_size=batch,
        throughput_rps=rps,
        throughput_rps_min=rps * 0.95,
        throughput_rps_max=rps * 1.05,
        latency_p50_ms=p50_ms,
        latency_p95_ms=p50_ms * 1.2,
        latency_p99_ms=p99 * 0.9,
        latency_p99_ms_min=p99 * 0.8,
        latency_p99_ms_max=p99,
        mean_tokens=20.0,
        peak_memory_mb=0.0,
        cost_per_1k_usd=HOURLY / 3600.0 / rps * 1000.0,
        iterations=30,
        rounds=3,
    )


def linear(batch: int) -> BatchPoint:
    """Batch time 1 ms + 0.5 ms per row; p99 (worst round) 1.5x: throughput rises with the batch size."""
    return point(batch, 1.0 + 0.5 * batch)


def sweep_of(sizes: list[int], curve=linear) -> Sweep:  # type: ignore[no-untyped-def]
    return Sweep(engine="onnxruntime", threads=1, device="cpu", points=[curve(size) for size in sizes])


def batching_inputs(sizes: list[int], *, sla_ms: float | None = 20.0, max_batch: int = 8, wait: float = 2.0, **kw):  # type: ignore[no-untyped-def]
    return BatchingInputs(
        deployment="textcls-premium",
        variant="int8-dynamic",
        engine="onnxruntime",
        sla_class="premium",
        sla=sla_class(sla_ms),
        batching=BatchingParams(max_batch_size=max_batch, max_wait_ms=wait, preferred_batch_sizes=[4, 8]),
        has_override=True,
        sweep=sweep_of(sizes),
        sweep_source="m.json: variants[int8-dynamic].sweeps[engine=onnxruntime,threads=1,device=cpu]",
        **kw,
    )


# ----------------------------------------------------------------------------------------- search
@pytest.mark.parametrize("sla_ms", [5.0, 20.0, 30.0, 60.0])
def test_search_finds_the_exhaustive_best_with_a_fraction_of_the_trials(sla_ms: float) -> None:
    fits = lambda p: p.latency_p99_ms_max <= sla_ms  # noqa: E731
    feasible = [b for b in range(1, 65) if fits(linear(b))]
    exhaustive = max(feasible, key=lambda b: linear(b).throughput_rps)
    result = search_batch(range(1, 65), linear, fits)
    assert result.best is not None and result.best.batch_size == exhaustive
    assert result.boundary == max(feasible)
    assert result.trials <= 0.25 * 64
    assert len(set(result.measured)) == result.trials  # never measures a size twice


def test_search_finds_an_interior_throughput_peak() -> None:
    def dip(batch: int) -> BatchPoint:  # throughput peaks at 30, then falls 2% per row (cache spill)
        base = linear(batch)
        return point(batch, base.latency_p50_ms, throughput=base.throughput_rps * (1 - 0.02 * max(0, batch - 30)))

    result = search_batch(range(1, 65), dip, lambda p: True)
    assert result.best is not None and result.best.batch_size == 30
    assert result.trials <= 14


def test_search_reports_none_when_even_the_smallest_misses_and_reuses_known_points() -> None:
    nothing = search_batch(range(1, 65), linear, lambda p: False)
    assert nothing.best is None and nothing.measured == [1] and nothing.boundary is None
    calls: list[int] = []

    def counted(batch: int) -> BatchPoint:
        calls.append(batch)
        return linear(batch)

    known = [linear(16), linear(32)]
    fits = lambda p: p.latency_p99_ms_max <= 20.0  # noqa: E731 - boundary at 24
    result = search_batch(range(16, 33), counted, fits, known)
    assert result.best is not None and result.best.batch_size == 24
    assert 16 not in calls and 32 not in calls and len(calls) <= 9  # of the 15 unknown sizes


# ----------------------------------------------------------------------------------------- batching node
def test_batching_picks_the_largest_measured_batch_under_the_sla() -> None:
    # SLA 20 ms, wait 2 ms: batch b fits when 2 + 1.5 * (1 + 0.5 b) <= 20 -> b <= 22; measured 16 fits, 32 misses
    outcome = recommend_batching(batching_inputs([1, 2, 4, 8, 16, 32, 64]))
    assert isinstance(outcome, Recommendation)
    assert [(c.path, c.old, c.new) for c in outcome.changes] == [
        ("deployments[textcls-premium].batching.max_batch_size", 8, 16)
    ]
    metrics = {m.name: m for m in outcome.metrics}
    assert metrics["throughput per replica at the SLA"].before == pytest.approx(1600.0)  # 8 / 5 ms
    assert metrics["throughput per replica at the SLA"].after == pytest.approx(1777.8, abs=0.1)  # 16 / 9 ms
    assert outcome.sla[0].p99_ms == pytest.approx(2 + 13.5) and outcome.sla[0].meets
    assert "batch 16: 1,778 req/s, p99 15.5 ms, $1.5e-05/1k (meets premium p99 20 ms)" in outcome.notes
    assert "batch 32: 1,882 req/s, p99 27.5 ms, $1.42e-05/1k (misses premium p99 20 ms)" in outcome.notes
    apply_changes((ROOT / "params.yaml").read_text(), outcome.changes)  # a valid params edit


def test_batching_measures_only_the_gap_between_the_last_fitting_and_first_missing_size() -> None:
    measured: list[int] = []

    def measure(batch: int) -> BatchPoint:
        measured.append(batch)
        return linear(batch)

    outcome = recommend_batching(batching_inputs([1, 2, 4, 8, 16, 32, 64], measure=measure))
    assert isinstance(outcome, Recommendation)
    assert outcome.changes[0].new == 22  # the exact boundary, not the measured 16
    assert set(measured) <= set(range(17, 32)) and len(measured) <= 9
    assert any(e.kind == "measurement" and "batch 22:" in e.detail for e in outcome.evidence)


def test_batching_trims_preferred_sizes_and_adds_a_block_for_an_inheriting_deployment() -> None:
    # SLA 8 ms: 2 + 1.5 * (1 + 0.5 b) <= 8 -> b <= 6; the plan holds at batch 4 but the batcher fills 8 (misses)
    shrink = recommend_batching(batching_inputs([1, 2, 4, 8, 16], sla_ms=8.0, max_batch=8))
    assert isinstance(shrink, Recommendation)
    assert {c.path.rsplit(".", 1)[1]: c.new for c in shrink.changes} == {
        "max_batch_size": 4,
        "preferred_batch_sizes": [4],
    }
    assert "misses premium today when its batcher fills max_batch_size 8 (batch 8: 1,600 req/s, p99 9.5 ms" in (
        shrink.summary
    )
    inherit = recommend_batching(
        batching_inputs([1, 2, 4, 8, 16, 32, 64], sla_ms=None).__class__(
            **{**batching_inputs([1, 2, 4, 8, 16, 32, 64], sla_ms=None).__dict__, "has_override": False}
        )
    )
    assert isinstance(inherit, Recommendation)
    (change,) = inherit.changes
    assert change.path == "deployments[textcls-premium].batching" and change.old is None
    assert change.new == {"mode": "dynamic", "max_batch_size": 64, "max_wait_ms": 2.0, "preferred_batch_sizes": [4, 8]}


def test_batching_no_change_and_refusal() -> None:
    same = recommend_batching(batching_inputs([1, 2, 4, 8, 16, 32], max_batch=16))
    assert isinstance(same, NoChange) and "already holds" in same.reason
    hopeless = recommend_batching(batching_inputs([1, 2, 4], sla_ms=3.0))  # batch 1: 2 + 2.25 > 3
    assert isinstance(hopeless, Refusal) and hopeless.guardrail == "sla"
    assert "no measured batch size meets premium p99 3 ms with max_wait_ms 2" in hopeless.reason


def test_point_line_reads_like_the_spec() -> None:
    line = point_line(point(16, 40.0, 43.0, throughput=200.0), 2.0, "premium", sla_class(50))
    assert line == "batch 16: 200 req/s, p99 45.0 ms, $0.000133/1k (meets premium p99 50 ms)"


def test_batching_node_reads_the_deployments_own_sweep_from_the_manifest() -> None:
    context = AgentContext.load(ROOT, manifest_path=FIXTURE)
    outcomes = batching.run(context)
    assert [o.target.deployment for o in outcomes] == ["textcls-premium", "textcls-shared"]
    premium = outcomes[0]
    assert isinstance(premium, Recommendation)
    assert premium.changes[0].new == 64  # every measured size meets premium 50 ms at wait 2 ms; 64 is fastest
    assert "variants[int8-dynamic].sweeps[engine=onnxruntime,threads=1,device=cpu]" in premium.evidence[0].detail


# ----------------------------------------------------------------------------------------- quantization node
def project(tmp_path: Path, manifest: Manifest) -> AgentContext:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    path = tmp_path / "manifest.json"
    path.write_text(manifest.model_dump_json())
    return AgentContext.load(tmp_path, manifest_path=path, deployments=["textcls-premium"])


def test_quantization_accepts_the_cheaper_non_inferior_variant_and_says_why_it_refused_the_others(
    tmp_path: Path,
) -> None:
    outcomes = quantization.run(project(tmp_path, load_manifest(FIXTURE)))
    recommendation = outcomes[0]
    assert isinstance(recommendation, Recommendation)
    assert recommendation.changes[0].model_dump(exclude={"why"}) == {
        "path": "deployments[textcls-premium].variant",
        "old": "int8-dynamic",
        "new": "int8-static",
    }
    assert recommendation.accuracy is not None and recommendation.accuracy.decision == "within_budget"
    assert check_accuracy(recommendation).passed
    cost = next(m for m in recommendation.metrics if m.name == "cost per 1k requests at the SLA")
    assert cost.before == pytest.approx(1.082e-05) and cost.after == pytest.approx(9.963e-06)  # batch 8 of each
    refusals = {o.target.variant: o for o in outcomes if isinstance(o, Refusal)}
    assert refusals["pruned-heads-25"].guardrail == "accuracy"
    assert (
        "over budget" in refusals["pruned-heads-25"].reason and "[+1.14, +2.24]" in refusals["pruned-heads-25"].reason
    )
    assert "inconclusive" in refusals["distilled"].reason  # [+0.66, +1.68] straddles the 1-point budget
    assert "does not lower the cost per 1k" in refusals["fp32"].reason


def test_quantization_refuses_a_cheaper_variant_whose_decision_is_not_within_budget(tmp_path: Path) -> None:
    manifest = load_manifest(FIXTURE)
    static = manifest.variant("int8-static")
    assert static.decision is not None
    over = Decision(
        **{
            **static.decision.model_dump(),
            "loss": Interval(estimate=0.008, low=0.004, high=0.012, confidence=0.95),
            "within_budget": False,
        }
    )
    variants = [v.model_copy(update={"decision": over}) if v.name == "int8-static" else v for v in manifest.variants]
    outcomes = quantization.run(project(tmp_path, manifest.model_copy(update={"variants": variants})))
    assert isinstance(outcomes[0], NoChange)
    assert "no other built variant is within the accuracy budget and cheaper" in outcomes[0].reason
    refusal = next(o for o in outcomes if o.target.variant == "int8-static")
    assert isinstance(refusal, Refusal) and refusal.guardrail == "accuracy"
    assert "[+0.40, +1.20] points, budget 1.00 points" in refusal.reason


# ----------------------------------------------------------------------------------------- profiler node
def profile_json(variant: str, engine: str, split: dict[str, float], top_op: str, seq_len: float = 64) -> str:
    total = 80.0
    return json.dumps(
        {
            "variant": variant,
            "engine": engine,
            "batch_size": 8,
            "seq_len": seq_len,
            "total_ms": total,
            "top_ops": [{"op": top_op, "calls": 10, "self_time_ms": 30.0, "percent": 40.0}],
            "layers": [],
            "split": {g: {"time_ms": total * p / 100, "percent": p} for g, p in split.items()},
        }
    )


def profiled_project(tmp_path: Path, split: dict[str, float], *, engine: str = "onnxruntime") -> AgentContext:
    """The fixture manifest, deployment textcls-premium serving fp32; torch at batch 8 is 30% faster."""
    manifest = load_manifest(FIXTURE)
    variants = []
    for entry in manifest.variants:
        if entry.name == "fp32":
            torch_points = [
                p.model_copy(update={"latency_p50_ms": p.latency_p50_ms * 0.7}) if p.batch_size == 8 else p
                for p in entry.sweep("torch", 1, "cpu").points  # type: ignore[union-attr]
            ]
            sweeps = [
                s.model_copy(update={"points": torch_points}) if (s.engine, s.threads) == ("torch", 1) else s
                for s in entry.sweeps
            ]
            entry = entry.model_copy(update={"sweeps": sweeps, "profile": "profiles/fp32.json"})
        variants.append(entry)
    context = project(tmp_path, manifest.model_copy(update={"variants": variants}))
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "fp32.json").write_text(profile_json("fp32", "torch", split, "aten::addmm"))
    text = (tmp_path / "params.yaml").read_text()
    premium = text.index("- name: textcls-premium")
    head, tail = text[:premium], text[premium:]
    tail = tail.replace("  variant: int8-dynamic\n  engine: onnxruntime\n", f"  variant: fp32\n  engine: {engine}\n", 1)
    (tmp_path / "params.yaml").write_text(head + tail)
    return AgentContext.load(tmp_path, manifest_path=context.manifest_path, deployments=["textcls-premium"])


def test_profiler_names_an_ffn_bottleneck_and_proposes_the_measured_fastest_fix(tmp_path: Path) -> None:
    context = profiled_project(tmp_path, {"attention": 20.0, "ffn": 61.0, "embeddings": 5.0, "other": 14.0})
    (outcome,) = profiler.run(context)
    assert isinstance(outcome, Recommendation)
    assert outcome.summary.startswith("Ffn takes 61.0% of the time at batch 8 (padded width 64) on fp32 (torch)")
    # candidates at batch 8 (onnxruntime, 1 thread): torch -30%, int8-static 2.989 vs 7.363 ms (-59%),
    # int8-dynamic 3.246 ms (-56%), fp16 slower; the largest measured saving wins
    assert [(c.path, c.old, c.new) for c in outcome.changes] == [
        ("deployments[textcls-premium].variant", "fp32", "int8-static")
    ]
    assert outcome.accuracy is not None and outcome.accuracy.decision == "within_budget"
    times = next(m for m in outcome.metrics if m.name == "batch 8 median time")
    assert (times.before, times.after) == (7.363, 2.989)
    assert any(e.kind == "profile" and e.ref == "profiles/fp32.json" for e in outcome.evidence)


def test_profiler_on_attention_proposes_the_engine_and_only_reports_a_sequence_cap(tmp_path: Path) -> None:
    context = profiled_project(tmp_path, {"attention": 61.0, "ffn": 20.0, "embeddings": 5.0, "other": 14.0})
    (outcome,) = profiler.run(context)
    assert isinstance(outcome, Recommendation)
    assert outcome.summary.startswith("Attention takes 61.0% of the time at batch 8")
    assert [(c.path, c.old, c.new) for c in outcome.changes] == [
        ("deployments[textcls-premium].engine", "onnxruntime", "torch")
    ]
    assert outcome.accuracy is None  # same artifact weights: no accuracy decision involved
    assert any("dvc exp run -S model.max_seq_len=48" in note for note in outcome.notes)
    assert build_proposal(context, outcome, plan=False).recommendation == outcome  # passes the guardrails


def test_profiler_without_a_faster_option_or_a_profile(tmp_path: Path) -> None:
    context = profiled_project(
        tmp_path, {"attention": 61.0, "ffn": 20.0, "embeddings": 5.0, "other": 14.0}, engine="torch"
    )
    (outcome,) = profiler.run(context)  # already on the faster engine; attention-bound: no precision candidate
    assert isinstance(outcome, NoChange) and "attention takes 61.0%" in outcome.reason
    (tmp_path / "profiles" / "fp32.json").unlink()
    (missing,) = profiler.run(context)
    assert isinstance(missing, Refusal) and missing.guardrail == "evidence"
    assert "profiles/fp32.json: no profile; run the profile stage" in missing.reason
