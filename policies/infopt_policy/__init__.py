"""infopt's CrossGuard rules, self-contained: they import only the standard library and pulumi_policy.

The pack is published on its own (`pulumi policy publish`), so nothing here may import the infopt project.
What the project knows (which artifacts the manifest allows, whether the stack pins images by digest) reaches
the rules through the pack's policy config (`--policy-pack-config`, or `pulumi policy enable --config`).
"""

from __future__ import annotations

from .rules import ALL_POLICIES, PACK_NAME, RESOURCE_POLICIES, STACK_POLICIES

__all__ = ["ALL_POLICIES", "PACK_NAME", "RESOURCE_POLICIES", "STACK_POLICIES"]
