"""Proposals and guardrails: each guardrail refuses with its name and reason; a passing change renders a PR."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.context import AgentContext
from agent.contract import (
    AccuracyDecision,
    Interval,
    Metric,
    NoChange,
    ParamChange,
    Recommendation,
    Refusal,
    SlaPrediction,
    Target,
)
from agent.proposal import Proposal, branch_name, build_proposal, marker_of, metrics_table, propose

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "tests" / "fixtures" / "manifest.json"


@pytest.fixture(scope="module")
def context() -> AgentContext:
    return AgentContext.load(ROOT, manifest_path=MANIFEST)


def rec(changes: list[ParamChange], **extra: object) -> Recommendation:
    fields: dict[str, object] = {
        "node": "scaling",
        "topic": "scaling",
        "title": "Scale textcls-premium",
        "summary": "2 replicas serve 95% of the trace, a 3rd for spikes.",
        "target": Target(deployment="textcls-premium", variant="int8-dynamic", sla_class="premium"),
        "changes": changes,
    } | extra
    return Recommendation.model_validate(fields)


MIN_3 = ParamChange(path="deployments[textcls-premium].replicas.min", old=2, new=3, why="capacity")


def test_passing_change_renders_every_section_with_the_infra_plan_diff(context: AgentContext) -> None:
    metrics = [Metric(name="replicas.min", before=2, after=3, source="params.yaml")]
    sla = [SlaPrediction(sla_class="premium", load_rps=900, replicas=3, p99_ms=21.5, sla_p99_ms=50)]
    built = build_proposal(context, rec([MIN_3], metrics=metrics, sla=sla), stack="prod")
    assert isinstance(built, Proposal), built
    body = built.body
    assert built.branch == "agent/scaling-textcls-premium"
    assert "-    min: 2\n+    min: 3" in body
    assert "| Path | Metric | HEAD | proposal | Change |" in body
    assert "| params.yaml | replicas.min | 2 | 3 | +1 |" in body
    assert "| sla | pass | premium p99 21.5 ms (<= 50 ms)" in body
    assert "| policy | pass | stack prod: 52 resources" in body
    assert "| HorizontalPodAutoscaler inference-acme/textcls-premium | changed | `spec.minReplicas` | 2 | 3 |" in body
    assert "| accuracy | n/a |" in body
    assert marker_of(body) == (built.id, built.branch)
    assert built.params_after.count("\n") == built.params_before.count("\n")


def test_policy_guardrail_refuses_a_variant_over_the_accuracy_budget(context: AgentContext) -> None:
    change = ParamChange(path="deployments[textcls-premium].variant", old="int8-dynamic", new="pruned-heads-25")
    refusal = build_proposal(context, rec([change]), stack="prod")
    assert isinstance(refusal, Refusal)
    assert refusal.guardrail == "policy"
    assert "artifact-is-deployable" in refusal.reason
    assert "'pruned-heads-25' is not within the accuracy budget" in refusal.reason
    assert "(1 new with this change)" in refusal.reason


def test_schema_guardrail_refuses_min_above_max(context: AgentContext) -> None:
    change = ParamChange(path="deployments[textcls-premium].replicas.min", old=2, new=9)
    refusal = build_proposal(context, rec([change]), plan=False)
    assert isinstance(refusal, Refusal) and refusal.guardrail == "params_schema"
    assert "min 9 > max 6" in refusal.reason


def test_accuracy_guardrail_refuses_anything_but_within_budget(context: AgentContext) -> None:
    decision = AccuracyDecision(
        variant="int8-static",
        baseline="fp32",
        decision="inconclusive",
        budget=0.02,
        accuracy=0.79,
        loss=0.012,
        loss_interval=Interval(low=-0.004, high=0.028),
        source="artifacts/manifest.json variants[int8-static]",
    )
    change = ParamChange(path="deployments[textcls-premium].variant", old="int8-dynamic", new="int8-static")
    refusal = build_proposal(context, rec([change], accuracy=decision), plan=False)
    assert isinstance(refusal, Refusal) and refusal.guardrail == "accuracy"
    assert "int8-static vs fp32: inconclusive (budget 0.0200)" in refusal.reason
    assert "95% interval [-0.0040, +0.0280]" in refusal.reason
    passing = build_proposal(
        context, rec([change], accuracy=decision.model_copy(update={"decision": "within_budget"})), plan=False
    )
    assert isinstance(passing, Proposal)


def test_sla_guardrail_refuses_a_predicted_p99_over_the_sla(context: AgentContext) -> None:
    sla = [SlaPrediction(sla_class="premium", load_rps=900, replicas=3, p99_ms=61.0, sla_p99_ms=50, what="at peak")]
    refusal = build_proposal(context, rec([MIN_3], sla=sla), plan=False)
    assert isinstance(refusal, Refusal) and refusal.guardrail == "sla"
    assert "premium p99 61 ms (<= 50 ms)" in refusal.reason


def test_propose_takes_the_first_recommendation_that_passes(context: AgentContext) -> None:
    bad = rec([ParamChange(path="deployments[textcls-premium].replicas.min", old=2, new=9)])
    good = rec([MIN_3])
    idle = NoChange(node="scaling", target=Target(deployment="textcls-shared"), reason="already right")
    chosen, report = propose(context, [bad, good, idle], plan=False)
    assert chosen is not None and chosen.recommendation == good
    assert [type(item).__name__ for item in report] == ["Refusal", "Recommendation", "NoChange"]


def test_proposal_id_is_stable_for_the_same_change_and_new_for_another(context: AgentContext) -> None:
    first = build_proposal(context, rec([MIN_3]), plan=False)
    again = build_proposal(context, rec([MIN_3], summary="same change, other words"), plan=False)
    other = build_proposal(context, rec([MIN_3.model_copy(update={"new": 4})]), plan=False)
    assert isinstance(first, Proposal) and isinstance(again, Proposal) and isinstance(other, Proposal)
    assert first.id == again.id != other.id
    assert branch_name(rec([MIN_3], topic="Batching")) == "agent/batching-textcls-premium"


def test_metrics_table_is_dvc_metrics_diff_style() -> None:
    table = metrics_table(
        [
            Metric(name="p99 premium", before=61.234567, after=21.5, unit="ms", source="simulation"),
            Metric(name="cost", before=None, after=1.2e-05, source="infopt/cost.py"),
        ]
    )
    assert table.splitlines() == [
        "| Path | Metric | HEAD | proposal | Change |",
        "|---|---|---|---|---|",
        "| simulation | p99 premium (ms) | 61.235 | 21.5 | -39.735 |",
        "| infopt/cost.py | cost | - | 1.2e-05 | - |",
    ]
