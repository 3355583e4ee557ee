"""The four rules a recommendation must pass before it may become a pull request.

- params_schema: the edited params.yaml validates through `infopt.params.parse_params` (and the edit applies
  cleanly to the current text).
- accuracy: when the recommendation carries an accuracy decision (the quantization node's, read from the
  manifest's non-inferiority test), it must be `within_budget`; anything else is refused.
- sla: every SLA prediction of the recommendation meets its class's p99 and failure budget.
- policy: the offline infra plan with the proposed params passes the strict schemas and the policy pack.

Each check returns a `Check`; the first failing one becomes the `Refusal` that says which rule and why.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.contract import Guardrail, Recommendation, Refusal
from agent.plan_diff import PlanDiff


@dataclass(frozen=True)
class Check:
    guardrail: Guardrail
    passed: bool | None  # None: not applicable to this recommendation
    detail: str

    @property
    def label(self) -> str:
        return {True: "pass", False: "FAIL", None: "n/a"}[self.passed]


def check_accuracy(recommendation: Recommendation) -> Check:
    decision = recommendation.accuracy
    if decision is None:
        return Check("accuracy", None, "the change does not touch what is served (no accuracy decision needed)")
    interval = ""
    if decision.loss_interval is not None:
        interval = (
            f"; loss {decision.loss if decision.loss is not None else float('nan'):+.4f}, "
            f"{decision.loss_interval.confidence:.0%} interval [{decision.loss_interval.low:+.4f}, "
            f"{decision.loss_interval.high:+.4f}]"
        )
    detail = (
        f"{decision.variant} vs {decision.baseline}: {decision.decision} (budget {decision.budget:.4f}){interval}"
        + (f"; {decision.source}" if decision.source else "")
    )
    return Check("accuracy", decision.decision == "within_budget", detail)


def check_sla(recommendation: Recommendation) -> Check:
    if not recommendation.sla:
        return Check("sla", None, "no latency prediction is involved")
    failing = [p for p in recommendation.sla if not p.meets]
    shown = failing or recommendation.sla
    parts = []
    for item in shown:
        bound = f"<= {item.sla_p99_ms:g} ms" if item.sla_p99_ms is not None else "no p99 SLA"
        parts.append(
            f"{item.sla_class} p99 {item.p99_ms:g} ms ({bound}), failed {item.failed_fraction:.2%} "
            f"(<= {item.max_failed_fraction:.0%}) at {item.load_rps:g} req/s on {item.replicas} replica(s)"
            + (f" {item.what}" if item.what else "")
        )
    return Check("sla", not failing, "; ".join(parts))


def check_policy(diff: PlanDiff | None, reason_missing: str = "") -> Check:
    if diff is None:
        return Check("policy", False, reason_missing or "the infra plan could not be made")
    after = diff.after
    if after.ok:
        return Check(
            "policy",
            True,
            f"stack {diff.stack}: {after.resources} resources, {after.schema_validated} schema-validated, "
            "0 schema errors, 0 policy violations",
        )
    problems = [f"{v.get('policy')}: {v.get('message')}" for v in after.violations]
    problems += [f"schema {e.get('resource')} {e.get('path')}: {e.get('message')}" for e in after.schema_errors]
    new = len(diff.new_violations)
    return Check(
        "policy",
        False,
        f"stack {diff.stack}: {len(after.violations)} policy violation(s) ({new} new with this change), "
        f"{len(after.schema_errors)} schema error(s): " + "; ".join(problems[:5]),
    )


def refusal_for(recommendation: Recommendation, checks: list[Check]) -> Refusal | None:
    failed = next((check for check in checks if check.passed is False), None)
    if failed is None:
        return None
    return Refusal(
        node=recommendation.node,
        target=recommendation.target,
        guardrail=failed.guardrail,
        reason=f"{recommendation.title}: refused by the {failed.guardrail} guardrail: {failed.detail}",
        evidence=recommendation.evidence,
    )
