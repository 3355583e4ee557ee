"""Policy pack entry point (`pulumi preview --policy-pack policies`, `pulumi policy publish`).

Pulumi runs this file with the pack folder as the working directory and first entry of sys.path, so the
rules are imported as the pack's own package; building the PolicyPack starts its gRPC server and blocks.
"""

from __future__ import annotations

from infopt_policy import ALL_POLICIES, PACK_NAME
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(PACK_NAME, policies=ALL_POLICIES, enforcement_level=EnforcementLevel.MANDATORY)
