"""The offline infra plan before and after a params change, and what differs between them.

Runs `infra.plan.plan(...)` (Pulumi mocks + strict Kubernetes schemas + the CrossGuard pack; nothing is
applied) for one stack with the base params and with the proposed params, against the same manifest, and
lists the resources added, removed and changed field by field, with both sides' schema and policy results.
Only `plan()` and the `PlanResult` fields below are used, so additive changes to infra/plan.py are fine.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from infopt.manifest import Manifest
from infopt.params import Params

MAX_VALUE_CHARS = 80  # long strings (an adapter ConfigMap) are shown shortened in the table


@dataclass(frozen=True)
class FieldChange:
    path: str
    before: Any
    after: Any


@dataclass(frozen=True)
class ResourceChange:
    resource: str  # "HorizontalPodAutoscaler inference-acme/textcls-premium"
    change: Literal["added", "removed", "changed"]
    fields: tuple[FieldChange, ...] = ()


@dataclass(frozen=True)
class PlanSide:
    resources: int
    schema_validated: int
    schema_errors: tuple[dict[str, str], ...]
    violations: tuple[dict[str, str], ...]

    @property
    def ok(self) -> bool:
        return not self.schema_errors and not self.violations


@dataclass(frozen=True)
class PlanDiff:
    stack: str
    kubernetes_version: str
    before: PlanSide
    after: PlanSide
    changes: tuple[ResourceChange, ...] = field(default_factory=tuple)

    @property
    def new_violations(self) -> list[dict[str, str]]:
        known = {(v.get("policy"), v.get("resource"), v.get("message")) for v in self.before.violations}
        return [v for v in self.after.violations if (v.get("policy"), v.get("resource"), v.get("message")) not in known]


def _key(resource: Any) -> str:
    manifest = resource.manifest
    meta = manifest.get("metadata", {})
    namespace = meta.get("namespace")
    return (
        f"{manifest.get('kind', resource.type)} {namespace + '/' if namespace else ''}{meta.get('name', resource.name)}"
    )


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat or {prefix: {}}
    if isinstance(value, list):
        flat = {}
        for index, item in enumerate(value):
            flat.update(_flatten(item, f"{prefix}[{index}]"))
        return flat or {prefix: []}
    return {prefix: value}


def side(result: Any) -> PlanSide:
    resources = list(result.resources)
    skipped = list(getattr(result, "schema_skipped", []))
    return PlanSide(
        resources=len(resources),
        schema_validated=len(resources) - len(skipped),
        schema_errors=tuple(dict(item) for item in getattr(result, "schema_errors", [])),
        violations=tuple(dict(item) for item in getattr(result, "violations", [])),
    )


def diff_results(before: Any, after: Any) -> PlanDiff:
    old = {_key(r): r.manifest for r in before.resources}
    new = {_key(r): r.manifest for r in after.resources}
    changes: list[ResourceChange] = []
    for key in sorted(old.keys() | new.keys()):
        if key not in new:
            changes.append(ResourceChange(key, "removed"))
        elif key not in old:
            changes.append(ResourceChange(key, "added"))
        else:
            a, b = _flatten(old[key]), _flatten(new[key])
            fields = tuple(
                FieldChange(path, a.get(path), b.get(path))
                for path in sorted(a.keys() | b.keys())
                if a.get(path) != b.get(path)
            )
            if fields:
                changes.append(ResourceChange(key, "changed", fields))
    return PlanDiff(
        stack=after.stack,
        kubernetes_version=getattr(after, "kubernetes_version", ""),
        before=side(before),
        after=side(after),
        changes=tuple(changes),
    )


def plan_change(
    before: Params,
    after: Params,
    manifest: Manifest,
    stack: str,
    stacks_dir: Path,
    *,
    after_manifest: Manifest | None = None,
) -> PlanDiff:
    """Plan `stack` with both params (infra.plan is imported here: Pulumi loads only when a plan is made); the
    after side deploys `after_manifest` when the change enables a variant only an experiment has built."""
    from infra.plan import plan
    from infra.stack_config import load_stack_config, stack_file

    config = load_stack_config(stack_file(stack, stacks_dir))
    return diff_results(plan(before, manifest, config, stack), plan(after, after_manifest or manifest, config, stack))


def _lines_changed(before: str, after: str) -> tuple[str, str]:
    """For two multi-line strings (a ConfigMap holding a file): only the lines that differ."""
    old, new = [], []
    for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0):
        if line.startswith("-") and not line.startswith("---"):
            old.append(line[1:].strip())
        elif line.startswith("+") and not line.startswith("+++"):
            new.append(line[1:].strip())
    return "; ".join(old) or "(no line)", "; ".join(new) or "(no line)"


def _short(value: Any) -> str:
    text = "(absent)" if value is None else str(value)
    text = text.replace("\n", "\\n").replace("|", "\\|")
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def markdown(diff: PlanDiff, *, max_rows: int = 40) -> str:
    before, after = diff.before, diff.after
    lines = [
        f"Stack `{diff.stack}` (Kubernetes {diff.kubernetes_version}), offline plan: Pulumi mocks, strict schemas, "
        "the CrossGuard pack; nothing applied.",
        "",
        "| | base | proposal |",
        "|---|---|---|",
        f"| resources | {before.resources} | {after.resources} |",
        f"| schema-validated (strict) | {before.schema_validated} | {after.schema_validated} |",
        f"| schema errors | {len(before.schema_errors)} | {len(after.schema_errors)} |",
        f"| policy violations | {len(before.violations)} | {len(after.violations)} |",
        f"| ok | {'yes' if before.ok else 'no'} | {'yes' if after.ok else 'no'} |",
        "",
    ]
    if not diff.changes:
        lines.append("No resource changes: this stack plans the same objects with the proposed params.")
        return "\n".join(lines)
    added = sum(1 for c in diff.changes if c.change == "added")
    removed = sum(1 for c in diff.changes if c.change == "removed")
    changed = sum(1 for c in diff.changes if c.change == "changed")
    lines += [f"Resources: {changed} changed, {added} added, {removed} removed.", ""]
    lines += ["| resource | change | field | base | proposal |", "|---|---|---|---|---|"]
    rows = [(change, item) for change in diff.changes for item in (change.fields or (FieldChange("", None, None),))]
    for change, item in rows[:max_rows]:
        old_value, new_value = item.before, item.after
        if isinstance(old_value, str) and isinstance(new_value, str) and "\n" in old_value + new_value:
            old_value, new_value = _lines_changed(old_value, new_value)
        lines.append(
            f"| {change.resource} | {change.change} | `{item.path}` | {_short(old_value)} | {_short(new_value)} |"
            if item.path
            else f"| {change.resource} | {change.change} | | | |"
        )
    if len(rows) > max_rows:
        lines.append(f"| ... | | {len(rows) - max_rows} more rows | | |")
    for violation in after.violations:
        lines.append(f"\n- policy `{violation.get('policy')}`: {violation.get('message')}")
    return "\n".join(lines)
