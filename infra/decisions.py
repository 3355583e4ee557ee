"""Whether a manifest variant may be deployed: the one place infra reads the manifest's accuracy decision.

Today the decision is `VariantEntry.within_accuracy_budget` (accuracy loss vs the baseline within the
manifest's `max_accuracy_loss`). The policy config handed to the policy pack (and through it every check of
what a pod fetches) goes through `deployable`, so a change of the manifest's decision field is a change here
only.
"""

from __future__ import annotations

from infopt.manifest import VariantEntry


def deployable(entry: VariantEntry) -> tuple[bool, str]:
    """(may it serve traffic, why) for one manifest variant."""
    if entry.status != "built":
        return False, f"variant {entry.name!r} was not built ({entry.skip_reason})"
    if entry.within_accuracy_budget is True:
        return True, f"variant {entry.name!r} is within the accuracy budget (loss {entry.accuracy_loss})"
    if entry.within_accuracy_budget is None:
        return False, f"variant {entry.name!r} has no accuracy decision in the manifest (was it evaluated?)"
    return False, f"variant {entry.name!r} is not within the accuracy budget (loss {entry.accuracy_loss})"
