"""Offline plan: run the Pulumi program under mocks, validate every object, run the policy pack.

This is a PLAN, not an apply: nothing talks to a cluster or a Pulumi backend. The mock monitor records each
resource's type, name and inputs (camelCase, numbers as floats, converted back), each Kubernetes resource
becomes a manifest dict, built-in kinds are validated with `kubernetes_validate` (strict: unknown fields
fail) for the stack's Kubernetes version, and every policy of the pack runs on every resource, then every
stack policy on the whole set, the way `pulumi preview --policy-pack policies` would.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pulumi
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)
from pulumi_policy.proxy import unknown_checking_proxy
from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import LiteralScalarString

from infopt.manifest import Manifest
from infopt.params import Params
from infra.program import build
from infra.stack_config import PROJECT, StackConfig
from infra.topology import resolve
from policies.rules import RESOURCE_POLICIES, STACK_POLICIES

K8S_PREFIX = "kubernetes:"


@dataclass(frozen=True)
class PlannedResource:
    type: str  # Pulumi type token, e.g. kubernetes:apps/v1:Deployment
    name: str  # Pulumi logical name
    manifest: dict[str, Any]

    @property
    def key(self) -> tuple[str, str, str]:
        meta = self.manifest["metadata"]
        return self.manifest["kind"], meta.get("namespace", ""), meta["name"]

    @property
    def urn(self) -> str:
        return f"urn:pulumi:{pulumi.get_stack()}::{PROJECT}::{self.type}::{self.name}"


@dataclass
class PlanResult:
    stack: str
    kubernetes_version: str
    resources: list[PlannedResource]
    schema_errors: list[dict[str, str]] = field(default_factory=list)
    schema_skipped: list[str] = field(default_factory=list)  # custom resources: no schema shipped
    violations: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.schema_errors and not self.violations

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r.manifest["kind"] for r in self.resources).items()))

    def summary(self) -> dict[str, Any]:
        return {
            "title": f"infopt infrastructure PLAN for stack {self.stack} (offline; nothing was applied)",
            "stack": self.stack,
            "kubernetes_version": self.kubernetes_version,
            "resources": len(self.resources),
            "counts_by_kind": self.counts(),
            "schema_validated": len(self.resources) - len(self.schema_skipped),
            "schema_skipped_custom_resources": self.schema_skipped,
            "schema_errors": self.schema_errors,
            "policies": [p.name for p in (*RESOURCE_POLICIES, *STACK_POLICIES)],
            "violations": self.violations,
            "ok": self.ok,
        }


def _numbers(value: Any) -> Any:
    """Mock inputs carry every number as a float; Kubernetes integers must be ints again."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_numbers(item) for item in value]
    return value


class RecordingMocks(pulumi.runtime.Mocks):
    """Records every custom resource; outputs echo the inputs, as a server-side apply would."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        if args.custom:
            self.records.append((args.typ, args.name, _numbers(args.inputs)))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


def run_program(params: Params, manifest: Manifest, stack_config: StackConfig, stack: str) -> list[PlannedResource]:
    """Run `program.build` under mocks for `stack`; returns the Kubernetes resources it declared, in order."""
    resolve(params, manifest, stack_config)  # fail on bad input before the runtime declares anything
    # Pulumi's mocks and pulumi.runtime.test run on asyncio.get_event_loop(); give them a loop of their own,
    # since a caller (pytest-asyncio, an earlier async task) may have left the thread with none set.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=True)

    def program() -> pulumi.Output:
        import pulumi_kubernetes as kubernetes

        provider = kubernetes.Provider("k8s", context=stack_config.kube_context)
        components = build(params, manifest, stack_config, provider)
        return pulumi.Output.from_input(sorted(components.tenants))

    try:
        pulumi.runtime.test(program)()
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return [PlannedResource(typ, name, inputs) for typ, name, inputs in mocks.records if typ.startswith(K8S_PREFIX)]


def validate_schemas(result: PlanResult) -> None:
    for resource in result.resources:
        try:
            kubernetes_validate.validate(resource.manifest, result.kubernetes_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            result.schema_skipped.append("/".join(resource.key))
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.absolute_path) or "(root)"
            result.schema_errors.append({"resource": "/".join(resource.key), "path": where, "message": error.message})


def _options() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def run_policies(result: PlanResult, policy_config: dict[str, dict[str, Any]]) -> None:
    """Every resource policy on every resource, then every stack policy on all of them."""

    def reporter(policy: str, fallback: str):
        def report(message: str, urn: str | None = None) -> None:
            result.violations.append({"policy": policy, "resource": urn or fallback, "message": message})

        return report

    for resource in result.resources:
        for policy in RESOURCE_POLICIES:
            args = ResourceValidationArgs(
                resource.type,
                unknown_checking_proxy(resource.manifest),
                resource.urn,
                resource.name,
                _options(),
                None,
                policy_config.get(policy.name, {}),
            )
            policy.validate(args, reporter(policy.name, resource.urn))
    stack_resources = [
        PolicyResource(r.type, unknown_checking_proxy(r.manifest), r.urn, r.name, _options(), None, None, [], {})
        for r in result.resources
    ]
    for policy in STACK_POLICIES:
        args = StackValidationArgs(stack_resources, policy_config.get(policy.name, {}))
        policy.validate(args, reporter(policy.name, f"stack {result.stack}"))


def plan(params: Params, manifest: Manifest, manifest_path: Path, stack_config: StackConfig, stack: str) -> PlanResult:
    resources = run_program(params, manifest, stack_config, stack)
    result = PlanResult(stack, stack_config.kubernetes_version, resources)
    validate_schemas(result)
    run_policies(
        result,
        {
            "artifact-within-accuracy-budget": {"manifestPath": str(Path(manifest_path).resolve())},
            "images-pinned-by-digest": {"requireImageDigests": stack_config.require_image_digests},
        },
    )
    return result


_FIRST = ("apiVersion", "kind", "metadata", "name", "namespace")


def _readable(value: Any) -> Any:
    """Canonical key order (mock inputs arrive unordered) and multi-line strings as literal blocks."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda key: (_FIRST.index(key) if key in _FIRST else len(_FIRST), key))
        return {key: _readable(value[key]) for key in keys}
    if isinstance(value, list):
        return [_readable(item) for item in value]
    if isinstance(value, str) and "\n" in value:
        return LiteralScalarString(value)
    return value


def write_plan(result: PlanResult, out_dir: Path) -> tuple[Path, Path]:
    """`<out>/<stack>.yaml` (multi-document manifests) and `<out>/<stack>.summary.json`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifests = out_dir / f"{result.stack}.yaml"
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096
    with manifests.open("w") as handle:
        handle.write(
            f"# {result.summary()['title']}\n# {len(result.resources)} objects; summary in "
            f"{result.stack}.summary.json\n"
        )
        yaml.dump_all([_readable(r.manifest) for r in result.resources], handle)
    summary = out_dir / f"{result.stack}.summary.json"
    summary.write_text(json.dumps(result.summary(), indent=2) + "\n")
    return manifests, summary
