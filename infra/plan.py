"""Offline plan: run the Pulumi program under mocks, validate every object, run the policy pack.

This is a PLAN, not an apply: nothing talks to a cluster or a Pulumi backend. The mock monitor records each
resource's type, name, inputs (camelCase, numbers as floats, converted back) and custom timeouts; each
Kubernetes resource becomes a manifest dict, built-in kinds are validated with `kubernetes_validate`
(strict: unknown fields fail) for the stack's Kubernetes version, and the policy pack, started as its own
analyzer server (`infra.policy_analyzer`), analyzes every resource and then the whole stack over gRPC with
the stack's policy config, the way `pulumi preview --policy-pack policies --policy-pack-config <file>` does.
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
from pulumi.runtime.mocks import MockMonitor
from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import LiteralScalarString

from infopt.manifest import Manifest
from infopt.params import Params
from infra.policy_analyzer import AnalyzedResource, PolicyAnalyzer
from infra.policy_config import policy_config
from infra.program import build
from infra.stack_config import PROJECT, StackConfig
from infra.topology import resolve

K8S_PREFIX = "kubernetes:"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"


@dataclass(frozen=True)
class PlannedResource:
    type: str  # Pulumi type token, e.g. kubernetes:apps/v1:Deployment
    name: str  # Pulumi logical name
    manifest: dict[str, Any]  # the inputs: a Kubernetes manifest, or a Helm release's arguments
    custom_timeouts_s: tuple[float, float, float] = (0.0, 0.0, 0.0)  # create, update, delete

    @property
    def is_helm_release(self) -> bool:
        return self.type == HELM_RELEASE

    @property
    def key(self) -> tuple[str, str, str]:
        if self.is_helm_release:
            return "HelmRelease", str(self.manifest.get("namespace", "")), str(self.manifest.get("name", self.name))
        meta = self.manifest["metadata"]
        return self.manifest["kind"], meta.get("namespace", ""), meta["name"]

    @property
    def urn(self) -> str:
        return f"urn:pulumi:{pulumi.get_stack()}::{PROJECT}::{self.type}::{self.name}"

    def analyzed(self) -> AnalyzedResource:
        return AnalyzedResource(self.type, self.name, self.urn, self.manifest, self.custom_timeouts_s)


@dataclass
class PlanResult:
    stack: str
    kubernetes_version: str
    resources: list[PlannedResource]
    policies: list[str] = field(default_factory=list)  # the pack's policies, as its analyzer lists them
    schema_errors: list[dict[str, str]] = field(default_factory=list)
    schema_skipped: list[str] = field(default_factory=list)  # custom resources and Helm releases: no schema
    violations: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.schema_errors and not self.violations

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r.key[0] for r in self.resources).items()))

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
            "policies": self.policies,
            "violations": self.violations,
            "ok": self.ok,
        }


SECRET_SIG = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")  # Pulumi's wire format


def _numbers(value: Any) -> Any:
    """Mock inputs carry every number as a float and secret values (a Secret's stringData) wrapped in
    Pulumi's secret signature; the manifest gets integers and the plain value back."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        if value.get(SECRET_SIG[0]) == SECRET_SIG[1]:
            return _numbers(value.get("value"))
        return {key: _numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_numbers(item) for item in value]
    return value


class RecordingMocks(pulumi.runtime.Mocks):
    """Records every custom resource; outputs echo the inputs, as a server-side apply would."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []
        self.timeouts: dict[tuple[str, str], tuple[float, float, float]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        if args.custom:
            self.records.append((args.typ, args.name, _numbers(args.inputs)))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


def _duration_s(text: str) -> float:
    """A Pulumi custom timeout ("960s", "16m", "1h") in seconds; empty = the provider's default (0)."""
    if not text:
        return 0.0
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]]


class RecordingMonitor(MockMonitor):
    """The mock resource monitor, also keeping what the engine would get besides the inputs: custom timeouts."""

    def RegisterResource(self, request: Any) -> Any:
        timeouts = request.customTimeouts
        self.mocks.timeouts[(request.type, request.name)] = (
            _duration_s(timeouts.create),
            _duration_s(timeouts.update),
            _duration_s(timeouts.delete),
        )
        return super().RegisterResource(request)


def set_recording_mocks(project: str, stack: str, preview: bool = True) -> RecordingMocks:
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=preview, monitor=RecordingMonitor(mocks))
    return mocks


def planned(mocks: RecordingMocks) -> list[PlannedResource]:
    return [
        PlannedResource(typ, name, inputs, mocks.timeouts.get((typ, name), (0.0, 0.0, 0.0)))
        for typ, name, inputs in mocks.records
        if typ.startswith(K8S_PREFIX)
    ]


def run_program(params: Params, manifest: Manifest, stack_config: StackConfig, stack: str) -> list[PlannedResource]:
    """Run `program.build` under mocks for `stack`; returns the Kubernetes resources it declared, in order."""
    resolve(params, manifest, stack_config)  # fail on bad input before the runtime declares anything
    # Pulumi's mocks and pulumi.runtime.test run on asyncio.get_event_loop(); give them a loop of their own,
    # since a caller (pytest-asyncio, an earlier async task) may have left the thread with none set.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    mocks = set_recording_mocks(PROJECT, stack)

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
    return planned(mocks)


def validate_schemas(result: PlanResult) -> None:
    for resource in result.resources:
        if resource.is_helm_release:
            result.schema_skipped.append("/".join(resource.key))
            continue
        try:
            kubernetes_validate.validate(resource.manifest, result.kubernetes_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            result.schema_skipped.append("/".join(resource.key))
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.absolute_path) or "(root)"
            result.schema_errors.append({"resource": "/".join(resource.key), "path": where, "message": error.message})


def run_policies(result: PlanResult, analyzer: PolicyAnalyzer, config: dict[str, dict[str, Any]]) -> None:
    """Configure the pack, analyze every resource, then the stack, through the analyzer's gRPC interface."""
    analyzer.configure(config)
    result.policies = analyzer.policy_names
    diagnostics = []
    for resource in result.resources:
        diagnostics += analyzer.analyze(resource.analyzed())
    stack_urn = f"urn:pulumi:{result.stack}::{PROJECT}::pulumi:pulumi:Stack::{PROJECT}-{result.stack}"
    diagnostics += analyzer.analyze_stack([r.analyzed() for r in result.resources], stack_urn)
    result.violations = [
        {"policy": d.policy, "resource": d.urn, "message": d.message, "enforcement": d.enforcement} for d in diagnostics
    ]


def plan(
    params: Params,
    manifest: Manifest,
    stack_config: StackConfig,
    stack: str,
    analyzer: PolicyAnalyzer | None = None,
) -> PlanResult:
    """Plan `stack`; pass a running `analyzer` to reuse one policy pack process across several plans."""
    resources = run_program(params, manifest, stack_config, stack)
    result = PlanResult(stack, stack_config.kubernetes_version, resources)
    validate_schemas(result)
    config = policy_config(manifest, stack_config)
    if analyzer is None:
        with PolicyAnalyzer() as started:
            run_policies(result, started, config)
    else:
        run_policies(result, analyzer, config)
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


def _document(resource: PlannedResource) -> dict[str, Any]:
    """A Helm release is written as the arguments Pulumi passes to Helm, under a comment-like header."""
    if resource.is_helm_release:
        return {"pulumiHelmRelease": resource.type, **resource.manifest}
    return resource.manifest


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
        yaml.dump_all([_readable(_document(r)) for r in result.resources], handle)
    summary = out_dir / f"{result.stack}.summary.json"
    summary.write_text(json.dumps(result.summary(), indent=2) + "\n")
    return manifests, summary
