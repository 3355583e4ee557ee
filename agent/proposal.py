"""One recommendation -> one pull request proposal, after the guardrails.

`build_proposal` edits params.yaml (comment-preserving, agent/params_edit.py), validates it, plans the infra
stack before and after the change, runs the guardrails, and renders the pull request: a title, a stable
branch name from the change (`agent/scaling-textcls-premium`), and a markdown body with the params diff, a
before/after table in the style of `dvc metrics diff`, the predicted impact, the guardrail results, the
evidence, the infra plan diff and the risks. Its `id` hashes the branch and the params diff: the same change
keeps its id however often it is proposed, a different change on the same branch gets a new one (and
supersedes the old, agent/publish.py).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from agent.context import AgentContext
from agent.contract import Metric, Outcome, Recommendation, Refusal
from agent.guardrails import Check, check_accuracy, check_policy, check_sla, refusal_for
from agent.params_edit import ParamsEditError, apply_changes
from agent.plan_diff import PlanDiff, markdown, plan_change
from infopt.manifest import ManifestError
from infopt.params import ParamsError

MARKER = "infopt-agent"  # hidden marker in the PR body: <!-- infopt-agent proposal=<id> branch=<branch> -->
_MARKER_RE = re.compile(r"<!-- infopt-agent proposal=([0-9a-f]+) branch=(\S+) -->")


class Proposal(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    branch: str
    title: str
    body: str
    params_file: str  # path of params.yaml relative to the repository root
    params_before: str
    params_after: str
    diff: str
    recommendation: Recommendation
    checks: list[dict[str, str]]


def branch_name(recommendation: Recommendation) -> str:
    slug = f"{recommendation.topic}-{recommendation.target.label}".lower()
    return "agent/" + re.sub(r"[^a-z0-9-]+", "-", slug).strip("-")


def marker_of(body: str | None) -> tuple[str, str] | None:
    """(proposal id, branch) from a PR body the agent wrote, else None."""
    found = _MARKER_RE.search(body or "")
    return (found.group(1), found.group(2)) if found else None


# ----------------------------------------------------------------------------- rendering
def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1e9:
        return "inf"
    return f"{value:.5g}"


def metrics_table(metrics: Sequence[Metric]) -> str:
    """`dvc metrics diff --md` columns: Path, Metric, HEAD, the proposal, Change."""
    lines = ["| Path | Metric | HEAD | proposal | Change |", "|---|---|---|---|---|"]
    for metric in metrics:
        change = metric.change
        change_text = "-" if change is None else (f"{change:+.5g}" if change else "0")
        unit = f" ({metric.unit})" if metric.unit else ""
        lines.append(
            f"| {metric.source or '-'} | {metric.name}{unit} | {_number(metric.before)} | {_number(metric.after)} "
            f"| {change_text} |"
        )
    return "\n".join(lines)


def _impact(recommendation: Recommendation) -> list[str]:
    lines = [f"- {note}" for note in recommendation.notes]
    for prediction in recommendation.sla:
        bound = f"SLA {prediction.sla_p99_ms:g} ms" if prediction.sla_p99_ms is not None else "no p99 SLA"
        lines.append(
            f"- {prediction.sla_class}: predicted p99 {prediction.p99_ms:g} ms ({bound}), "
            f"{prediction.failed_fraction:.2%} failed, at {prediction.load_rps:g} req/s on "
            f"{prediction.replicas} replica(s) {prediction.what}".rstrip()
        )
    decision = recommendation.accuracy
    if decision is not None:
        accuracy = f"{decision.accuracy:.4f}" if decision.accuracy is not None else "-"
        if decision.accuracy_interval is not None:
            accuracy += f" [{decision.accuracy_interval.low:.4f}, {decision.accuracy_interval.high:.4f}]"
        lines.append(
            f"- accuracy of {decision.variant}: {accuracy}; decision vs {decision.baseline}: {decision.decision}"
        )
    return lines


def render_body(
    recommendation: Recommendation,
    diff: str,
    checks: Sequence[Check],
    plan: PlanDiff | None,
    proposal_id: str,
    branch: str,
) -> str:
    target = recommendation.target
    described = ", ".join(
        f"{key} `{value}`"
        for key, value in (
            ("deployment", target.deployment),
            ("variant", target.variant),
            ("engine", target.engine),
            ("SLA class", target.sla_class),
        )
        if value
    )
    parts = [
        f"## {recommendation.title}",
        "",
        recommendation.summary,
        "",
        f"Target: {described or 'params'}. Proposed by the `{recommendation.node}` node of `infopt agent propose`.",
        "",
        "### Params change",
        "",
        "Only `params.yaml` changes; every other line, comment and style stays as it was.",
        "",
        "```diff",
        diff.rstrip("\n"),
        "```",
        "",
        "| key | HEAD | proposal | why |",
        "|---|---|---|---|",
    ]
    parts += [f"| `{c.path}` | `{c.old}` | `{c.new}` | {c.why} |" for c in recommendation.changes]
    if recommendation.metrics:
        parts += ["", "### Metrics, before and after", "", metrics_table(recommendation.metrics)]
    impact = _impact(recommendation)
    if impact:
        parts += ["", "### Predicted impact", "", *impact]
    parts += ["", "### Guardrails", "", "| guardrail | result | detail |", "|---|---|---|"]
    parts += [f"| {check.guardrail} | {check.label} | {check.detail.replace('|', '/')} |" for check in checks]
    parts += ["", "### Evidence", ""]
    parts += [
        f"- {item.kind.replace('_', ' ')}: `{item.ref}`" + (f": {item.detail}" if item.detail else "")
        for item in recommendation.evidence
    ]
    parts += ["", "### Infra plan diff", "", markdown(plan) if plan is not None else "No plan was made."]
    if recommendation.risks:
        parts += ["", "### Risks", "", *[f"- {risk}" for risk in recommendation.risks]]
    parts += [
        "",
        "---",
        f"Re-running the agent on the same evidence updates this pull request; a different change for the same "
        f"target supersedes it here. Proposal `{proposal_id}`.",
        f"<!-- {MARKER} proposal={proposal_id} branch={branch} -->",
        "",
    ]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- building
def build_proposal(
    context: AgentContext,
    recommendation: Recommendation,
    *,
    stack: str = "prod",
    stacks_dir: Path | None = None,
    plan: bool = True,
) -> Proposal | Refusal:
    """The proposal for one recommendation, or the Refusal of the first guardrail it fails."""
    params_file = context.relative(context.params_path)
    try:
        edit = apply_changes(context.params_text, recommendation.changes, source=params_file)
    except (ParamsEditError, ParamsError) as error:
        return Refusal(
            node=recommendation.node,
            target=recommendation.target,
            guardrail="params_schema",
            reason=f"{recommendation.title}: refused by the params_schema guardrail: {error}",
            evidence=recommendation.evidence,
        )
    checks = [
        Check("params_schema", True, f"{params_file} as edited validates against infopt/params.py"),
        check_accuracy(recommendation),
        check_sla(recommendation),
    ]
    plan_diff: PlanDiff | None = None
    if plan:
        try:
            plan_diff = plan_change(
                context.params,
                edit.params,
                context.manifest(),
                stack,
                stacks_dir or context.root / "stacks",
                after_manifest=context.manifest_for(recommendation.manifest_experiment),
            )
            checks.append(check_policy(plan_diff))
        except (ManifestError, ValueError, OSError) as error:  # StackConfigError, TopologyError are ValueErrors
            checks.append(
                check_policy(None, f"the infra plan of stack {stack} failed: {type(error).__name__}: {error}")
            )
    else:
        checks.append(Check("policy", None, "infra plan skipped (--no-plan)"))
    refusal = refusal_for(recommendation, checks)
    if refusal is not None:
        return refusal
    branch = branch_name(recommendation)
    proposal_id = hashlib.sha256(f"{branch}\n{edit.diff}".encode()).hexdigest()[:12]
    body = render_body(recommendation, edit.diff, checks, plan_diff, proposal_id, branch)
    return Proposal(
        id=proposal_id,
        branch=branch,
        title=f"agent: {recommendation.title}",
        body=body,
        params_file=params_file,
        params_before=edit.before,
        params_after=edit.after,
        diff=edit.diff,
        recommendation=recommendation,
        checks=[{"guardrail": c.guardrail, "result": c.label, "detail": c.detail} for c in checks],
    )


def propose(
    context: AgentContext, outcomes: Sequence[Outcome], **options: object
) -> tuple[Proposal | None, list[Outcome]]:
    """The first recommendation (node order) that passes every guardrail, and every outcome with the refused
    recommendations replaced by their refusals."""
    chosen: Proposal | None = None
    report: list[Outcome] = []
    for outcome in outcomes:
        if isinstance(outcome, Recommendation) and chosen is None:
            built = build_proposal(context, outcome, **options)  # type: ignore[arg-type]
            if isinstance(built, Proposal):
                chosen = built
                report.append(outcome)
            else:
                report.append(built)
        else:
            report.append(outcome)
    return chosen, report
