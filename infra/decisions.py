"""Whether a manifest variant may be deployed: the one place infra reads the manifest's accuracy decision.

The decision is the variant's paired non-inferiority decision against the baseline (`VariantEntry.decision`,
infopt/stats.py): within budget only when the upper bound of the accuracy loss is within the manifest's
`max_accuracy_loss`; the baseline itself is deployable by definition. The policy config handed to the pack
(and through it every check of what a pod fetches) goes through `deployable`.
"""

from __future__ import annotations

from infopt.manifest import LlmManifest, LlmVariantEntry, VariantEntry


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


def llm_deployable(llm: LlmManifest, entry: LlmVariantEntry) -> tuple[bool, str]:
    """(may it serve traffic, why) for one LLM variant: its quality decision (perplexity increase and next-token
    accuracy loss both within budget on their upper bounds); the LLM baseline is deployable by definition."""
    if entry.status != "built":
        return False, f"LLM variant {entry.name!r} was not built ({entry.skip_reason})"
    if entry.name == llm.baseline:
        return True, f"LLM variant {entry.name!r} is the baseline"
    quality = entry.quality
    if quality is None or quality.within_budget is not True:
        increase = quality.perplexity_increase if quality else None
        loss = quality.accuracy_loss if quality else None
        return False, (
            f"LLM variant {entry.name!r} is not within its quality budget (perplexity increase upper bound "
            f"{increase.high if increase else None}, budget {llm.max_perplexity_increase}; accuracy loss upper "
            f"bound {loss.high if loss else None}, budget {llm.max_accuracy_loss})"
        )
    return True, f"LLM variant {entry.name!r} is within its quality budget"
