"""Policy pack entry point (`pulumi preview --policy-pack policies`): only builds the pack, which blocks."""

from __future__ import annotations

from pulumi_policy import PolicyPack

from policies.rules import ALL_POLICIES

PolicyPack("infopt", policies=ALL_POLICIES)
