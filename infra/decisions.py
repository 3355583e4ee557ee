"""Whether a manifest variant may be deployed: the one place infra reads the manifest's accuracy decision.

The decision is the variant's paired non-inferiority decision against the baseline (`VariantEntry.decision`,
infopt/stats.py): within budget only when the upper bound of the accuracy loss is within the manifest's
`max_accuracy_loss`; the baseline itself is deployable by definition. The policy config handed to the pack
(and through it every check of what a pod fetches) goes through `deployable`.
"""

from __future__ import annotations

from infopt.manifest import VariantEntry


def deployable(entry: VariantEntry) -> tuple[bool, str]:
    """(may it serve traffic, why) for one manifest variant."""
    if entry.status != "built":
        return False, f"variant {entry.name!r} was not built ({entry.skip_reason})"
    if entry.decision is None:
        if entry.quality is None:
            return False, f"variant {entry.name!r} has no quality in the manifest (was it evaluated?)"
        return True, f"variant {entry.name!r} is the baseline"
    loss = entry.decision.loss
    verdict = "within" if entry.decision.within_budget else "not within"
    reason = (
        f"variant {entry.name!r} is {verdict} the accuracy budget: paired loss vs {entry.decision.baseline} "
        f"{loss.estimate:+.4f}, upper bound {loss.high:+.4f} ({loss.confidence:.0%}), budget {entry.decision.budget}"
    )
    return entry.decision.within_budget, reason
