"""The policy pack's config for one stack: what only the project knows, handed to the pack as data.

`pulumi up --policy-pack policies --policy-pack-config <file>` (or `pulumi policy enable ... --config
<file>` for org-wide enforcement) passes this object to the pack; the offline plan sends the same one over
the analyzer's Configure call. The manifest's decisions (through `infra.decisions.deployable`) become a map
from artifact hash to verdict, so the pack checks the hash a pod's init container actually fetches, and
never trusts an annotation a workload sets on itself.
"""

from __future__ import annotations

from typing import Any

from infopt.manifest import Manifest
from infra.decisions import deployable, llm_deployable
from infra.stack_config import StackConfig


def artifact_decisions(manifest: Manifest) -> dict[str, dict[str, Any]]:
    """`<sha256> -> {variant, engine, deployable, reason}` for every artifact of every manifest variant
    (classifier and LLM)."""
    verdicts = [(entry, *deployable(entry)) for entry in manifest.variants]
    if manifest.llm is not None:
        verdicts += [(entry, *llm_deployable(manifest.llm, entry)) for entry in manifest.llm.variants]
    decisions: dict[str, dict[str, Any]] = {}
    for entry, allowed, reason in verdicts:
        for artifact in entry.artifacts:
            decisions[artifact.sha256] = {
                "variant": entry.name,
                "engine": artifact.engine,
                "deployable": allowed,
                "reason": reason,
            }
    return decisions


def policy_config(manifest: Manifest, stack: StackConfig) -> dict[str, dict[str, Any]]:
    return {
        "images-pinned-by-digest": {"requireImageDigests": stack.require_image_digests},
        "artifact-is-deployable": {"artifacts": artifact_decisions(manifest)},
    }
