"""The infopt policy pack's rules: one validator function per rule, each wrapped as a MANDATORY policy.

Validators read props through Mapping/Sequence access only, because under `pulumi preview` they are
read-only proxies (camelCase, exactly the manifests the program declares). The pack itself is built only
in `policies/__main__.py`: `PolicyPack(...)` starts a gRPC server and blocks.

Config (via `--policy-pack-config`, per policy name; the offline plan passes the same keys):
- `images-pinned-by-digest`: `requireImageDigests` (bool), `digestStacks` (default: infra DIGEST_REQUIRED_STACKS).
  A Deployment also opts in through its `infopt.dev/require-image-digests` / `infopt.dev/stack` annotations,
  so the prod rule holds under a real preview and in the offline plan without extra flags.
- `artifact-within-accuracy-budget`: `manifestPath` (else env INFOPT_MANIFEST, else artifacts/manifest.json;
  relative paths are taken from the repository root).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from infopt.manifest import Manifest, ManifestError, load_manifest
from infopt.quantity import parse_quantity, pod_requests
from infra.labels import ARTIFACT_SHA256, COMPONENT, MODEL_SERVER, REQUIRE_DIGESTS, STACK, TENANT, VARIANT
from infra.stack_config import DIGEST_REQUIRED_STACKS

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MANIFEST = "artifacts/manifest.json"
DIGEST_REF = re.compile(r"@sha256:[0-9a-f]{64}$")
BUILTIN_PRIORITY_CLASSES = ("system-cluster-critical", "system-node-critical")
GPU = "nvidia.com/gpu"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")


# ----------------------------------------------------------------------------- helpers
def kind_of(resource_type: str) -> str:
    """'kubernetes:apps/v1:Deployment' -> 'Deployment'."""
    return resource_type.rsplit(":", 1)[-1]


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _seq(value: Any) -> Sequence[Any]:
    return value if isinstance(value, Sequence) and not isinstance(value, str) else ()


def metadata(props: Mapping[str, Any]) -> Mapping[str, Any]:
    return _map(props.get("metadata"))


def pod_spec_of(kind: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    spec = _map(props.get("spec"))
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        spec = _map(_map(spec.get("jobTemplate")).get("spec"))
    if kind in WORKLOADS:
        return _map(_map(spec.get("template")).get("spec"))
    return None


def containers_of(pod: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in ("initContainers", "containers"):
        for container in _seq(pod.get(key)):
            yield _map(container)


def _where(name: str, container: Mapping[str, Any]) -> str:
    return f"{name}: container {container.get('name', '?')!r}"


def _resources_by_kind(resources: Sequence[Any], kind: str) -> list[Any]:
    return [r for r in resources if kind_of(r.resource_type) == kind]


def _namespace(resource: Any) -> str | None:
    return metadata(resource.props).get("namespace")


# ----------------------------------------------------------------------------- resource rules
def check_requests_and_limits(args: ResourceValidationArgs, report: ReportViolation) -> None:
    pod = pod_spec_of(kind_of(args.resource_type), args.props)
    if pod is None:
        return
    for container in containers_of(pod):
        resources = _map(container.get("resources"))
        for section in ("requests", "limits"):
            missing = [r for r in ("cpu", "memory") if r not in _map(resources.get(section))]
            if missing:
                report(f"{_where(args.name, container)} has no {section} for {missing}", None)


def check_non_root(args: ResourceValidationArgs, report: ReportViolation) -> None:
    pod = pod_spec_of(kind_of(args.resource_type), args.props)
    if pod is None:
        return
    pod_sc = _map(pod.get("securityContext"))
    for container in containers_of(pod):
        sc = _map(container.get("securityContext"))
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        user = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if non_root is not True:
            report(f"{_where(args.name, container)} does not set runAsNonRoot: true", None)
        if user is not None and int(user) == 0:
            report(f"{_where(args.name, container)} runs as user 0", None)


def check_no_privilege_or_host_access(args: ResourceValidationArgs, report: ReportViolation) -> None:
    pod = pod_spec_of(kind_of(args.resource_type), args.props)
    if pod is None:
        return
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag) is True:
            report(f"{args.name}: pod sets {flag}: true", None)
    for volume in _seq(pod.get("volumes")):
        if "hostPath" in _map(volume):
            report(f"{args.name}: volume {_map(volume).get('name')!r} is a hostPath", None)
    for container in containers_of(pod):
        sc = _map(container.get("securityContext"))
        if sc.get("privileged") is True:
            report(f"{_where(args.name, container)} is privileged", None)
        if sc.get("allowPrivilegeEscalation") is True:
            report(f"{_where(args.name, container)} allows privilege escalation", None)


def digests_required(args: ResourceValidationArgs) -> bool:
    config = args.get_config()
    if config.get("requireImageDigests") is True:
        return True
    annotations = _map(metadata(args.props).get("annotations"))
    if annotations.get(REQUIRE_DIGESTS) == "true":
        return True
    stack = annotations.get(STACK) or os.environ.get("PULUMI_STACK")
    stacks = list(config.get("digestStacks") or DIGEST_REQUIRED_STACKS)
    return stack is None or stack in stacks  # an unknown stack is treated as prod: fail closed


def check_image_digests(args: ResourceValidationArgs, report: ReportViolation) -> None:
    pod = pod_spec_of(kind_of(args.resource_type), args.props)
    if pod is None or not digests_required(args):
        return
    for container in containers_of(pod):
        image = str(container.get("image", ""))
        if not DIGEST_REF.search(image):
            report(f"{_where(args.name, container)} image {image!r} is not pinned by digest (@sha256:...)", None)


def check_hpa_bounds(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if kind_of(args.resource_type) != "HorizontalPodAutoscaler":
        return
    spec = _map(args.props.get("spec"))
    low, high = int(spec.get("minReplicas", 1)), int(spec.get("maxReplicas", 0))
    if low > high:
        report(f"{args.name}: minReplicas {low} > maxReplicas {high}", None)


def manifest_path(config: Mapping[str, Any]) -> Path:
    path = Path(config.get("manifestPath") or os.environ.get("INFOPT_MANIFEST") or DEFAULT_MANIFEST)
    return path if path.is_absolute() else REPO_ROOT / path


@lru_cache(maxsize=4)
def _manifest(path: str, mtime_ns: int) -> Manifest:
    return load_manifest(path)


def check_artifact_budget(args: ResourceValidationArgs, report: ReportViolation) -> None:
    annotations = _map(metadata(args.props).get("annotations"))
    if kind_of(args.resource_type) != "Deployment" or ARTIFACT_SHA256 not in annotations:
        return
    path = manifest_path(args.get_config())
    name = str(annotations.get(VARIANT))
    try:
        manifest = _manifest(str(path), path.stat().st_mtime_ns)
        if manifest.llm is not None and name in {variant.name for variant in manifest.llm.variants}:
            _check_llm_budget(args.name, manifest, name, str(annotations[ARTIFACT_SHA256]), path, report)
            return
        entry = manifest.variant(name)
    except (OSError, ManifestError) as error:
        report(f"{args.name}: cannot check artifact against the manifest: {error}", None)
        return
    sha = annotations[ARTIFACT_SHA256]
    if sha not in [artifact.sha256 for artifact in entry.artifacts]:
        report(f"{args.name}: artifact {sha} is not an artifact of variant {entry.name!r} in {path}", None)
    if entry.within_accuracy_budget is not True:
        report(
            f"{args.name}: variant {entry.name!r} is not within the accuracy budget (loss "
            f"{entry.accuracy_loss}, budget {manifest.max_accuracy_loss}); it may not be deployed",
            None,
        )


def _check_llm_budget(
    resource: str, manifest: Manifest, name: str, sha: str, path: Path, report: ReportViolation
) -> None:
    """An LLM variant: its artifact, and the non-inferiority decision of its quality (the baseline passes)."""
    llm = manifest.llm
    assert llm is not None
    entry = llm.variant(name)
    if sha not in [artifact.sha256 for artifact in entry.artifacts]:
        report(f"{resource}: artifact {sha} is not an artifact of LLM variant {name!r} in {path}", None)
    quality = entry.quality
    if name != llm.baseline and (quality is None or quality.within_budget is not True):
        increase = quality.perplexity_increase if quality else None
        loss = quality.accuracy_loss if quality else None
        report(
            f"{resource}: LLM variant {name!r} is not within its quality budget (perplexity increase upper bound "
            f"{increase.high if increase else None}, budget {llm.max_perplexity_increase}; accuracy loss upper bound "
            f"{loss.high if loss else None}, budget {llm.max_accuracy_loss}); it may not be deployed",
            None,
        )


# ----------------------------------------------------------------------------- stack rules
def check_tenant_namespaces(args: StackValidationArgs, report: ReportViolation) -> None:
    resources = args.resources
    for ns in _resources_by_kind(resources, "Namespace"):
        meta = metadata(ns.props)
        if TENANT not in _map(meta.get("labels")):
            continue
        name = meta.get("name")
        here = [r for r in resources if _namespace(r) == name]
        kinds = {kind_of(r.resource_type) for r in here}
        for needed in ("ResourceQuota", "LimitRange"):
            if needed not in kinds:
                report(f"tenant namespace {name!r} has no {needed}", ns.urn)
        deny_all = [
            r
            for r in here
            if kind_of(r.resource_type) == "NetworkPolicy"
            and not _map(_map(r.props.get("spec")).get("podSelector"))
            and {"Ingress", "Egress"} <= set(_seq(_map(r.props.get("spec")).get("policyTypes")))
            and not _seq(_map(r.props.get("spec")).get("ingress"))
            and not _seq(_map(r.props.get("spec")).get("egress"))
        ]
        if not deny_all:
            report(f"tenant namespace {name!r} has no default-deny NetworkPolicy (all pods, Ingress+Egress)", ns.urn)


def _quota_hard(resources: Sequence[Any], namespace: str | None) -> dict[str, Decimal] | None:
    quotas = [r for r in _resources_by_kind(resources, "ResourceQuota") if _namespace(r) == namespace]
    if not quotas:
        return None
    hard: dict[str, Decimal] = {}
    for quota in quotas:  # several quotas all apply: the smallest bound wins
        for key, value in _map(_map(quota.props.get("spec")).get("hard")).items():
            amount = parse_quantity(value)
            hard[key] = min(amount, hard.get(key, amount))
    return hard


def check_gpu_quota(args: StackValidationArgs, report: ReportViolation) -> None:
    for resource in args.resources:
        pod = pod_spec_of(kind_of(resource.resource_type), resource.props)
        if pod is None or pod_requests(pod)[GPU] <= 0:
            continue
        hard = _quota_hard(args.resources, _namespace(resource)) or {}
        allowed = hard.get(f"requests.{GPU}", Decimal(0))
        if allowed <= 0:
            report(
                f"{resource.name}: requests GPUs in namespace {_namespace(resource)!r}, whose ResourceQuota "
                f"allows none (requests.{GPU} = {allowed})",
                resource.urn,
            )


def check_priority_classes(args: StackValidationArgs, report: ReportViolation) -> None:
    declared = {metadata(r.props).get("name") for r in _resources_by_kind(args.resources, "PriorityClass")}
    for resource in args.resources:
        pod = pod_spec_of(kind_of(resource.resource_type), resource.props)
        if pod is None:
            continue
        name = pod.get("priorityClassName")
        labels = _map(_map(_map(_map(resource.props.get("spec")).get("template")).get("metadata")).get("labels"))
        if name is None:
            if labels.get(COMPONENT) == MODEL_SERVER:
                report(f"{resource.name}: serving pod has no priorityClassName", resource.urn)
            continue
        if name not in declared and name not in BUILTIN_PRIORITY_CLASSES:
            report(
                f"{resource.name}: priorityClassName {name!r} does not exist (declared: {sorted(declared)})",
                resource.urn,
            )


def _max_surge(spec: Mapping[str, Any], replicas: int) -> int:
    rolling = _map(_map(spec.get("strategy")).get("rollingUpdate"))
    surge = rolling.get("maxSurge", "25%")  # the Kubernetes default
    if isinstance(surge, str) and surge.endswith("%"):
        return math.ceil(replicas * int(surge[:-1]) / 100)
    return int(surge)


def check_hpa_fits_quota(args: StackValidationArgs, report: ReportViolation) -> None:
    needs: dict[str | None, dict[str, Decimal]] = {}
    urns: dict[str | None, list[str]] = {}
    for hpa in _resources_by_kind(args.resources, "HorizontalPodAutoscaler"):
        spec, ns = _map(hpa.props.get("spec")), _namespace(hpa)
        target = _map(spec.get("scaleTargetRef"))
        workloads = [
            r
            for r in _resources_by_kind(args.resources, str(target.get("kind")))
            if _namespace(r) == ns and metadata(r.props).get("name") == target.get("name")
        ]
        if not workloads:
            report(f"{hpa.name}: scale target {target.get('kind')}/{target.get('name')} is not in the stack", hpa.urn)
            continue
        workload = workloads[0]
        high = int(spec.get("maxReplicas", 0))
        pods = high + _max_surge(_map(workload.props.get("spec")), high)
        per_pod = pod_requests(pod_spec_of(kind_of(workload.resource_type), workload.props) or {})
        total = needs.setdefault(ns, {"cpu": Decimal(0), "memory": Decimal(0), GPU: Decimal(0), "pods": Decimal(0)})
        for key, amount in per_pod.items():
            total[key] += amount * pods
        total["pods"] += pods
        urns.setdefault(ns, []).append(hpa.urn)
    for ns, need in needs.items():
        hard = _quota_hard(args.resources, ns)
        if hard is None:
            continue
        checks = {
            "cpu": ("requests.cpu", "limits.cpu", "cpu"),
            "memory": ("requests.memory", "limits.memory", "memory"),
            GPU: (f"requests.{GPU}",),
            "pods": ("pods",),
        }
        for resource_name, keys in checks.items():
            for key in keys:
                if key in hard and need[resource_name] > hard[key]:
                    report(
                        f"namespace {ns!r}: HPAs at maxReplicas (+ rollout surge) need {resource_name} "
                        f"{need[resource_name]:f}, ResourceQuota {key} is {hard[key]:f}",
                        urns[ns][0],
                    )


# ----------------------------------------------------------------------------- the policies
MANDATORY = EnforcementLevel.MANDATORY
RESOURCE_POLICIES = [
    ResourceValidationPolicy(
        "containers-have-requests-and-limits",
        "Every container (and init container) sets cpu and memory requests and limits.",
        check_requests_and_limits,
        MANDATORY,
    ),
    ResourceValidationPolicy(
        "containers-run-as-non-root",
        "Every container runs with runAsNonRoot and a non-zero user.",
        check_non_root,
        MANDATORY,
    ),
    ResourceValidationPolicy(
        "no-privileged-or-host-access",
        "No privileged containers, privilege escalation, hostPath, hostNetwork/PID/IPC.",
        check_no_privilege_or_host_access,
        MANDATORY,
    ),
    ResourceValidationPolicy(
        "images-pinned-by-digest",
        "Images are pinned by digest where the stack requires it.",
        check_image_digests,
        MANDATORY,
        PolicyConfigSchema(
            {"requireImageDigests": {"type": "boolean"}, "digestStacks": {"type": "array", "items": {"type": "string"}}}
        ),
    ),
    ResourceValidationPolicy("hpa-replica-bounds", "HPA minReplicas <= maxReplicas.", check_hpa_bounds, MANDATORY),
    ResourceValidationPolicy(
        "artifact-within-accuracy-budget",
        "A serving Deployment's artifact belongs to a manifest variant within the accuracy budget.",
        check_artifact_budget,
        MANDATORY,
        PolicyConfigSchema({"manifestPath": {"type": "string"}}),
    ),
]
STACK_POLICIES = [
    StackValidationPolicy(
        "tenant-namespace-guardrails",
        "Every tenant namespace has a ResourceQuota, a LimitRange and a default-deny NetworkPolicy.",
        check_tenant_namespaces,
        MANDATORY,
    ),
    StackValidationPolicy(
        "gpu-only-where-quota-allows",
        "GPU requests only in namespaces whose quota allows GPUs.",
        check_gpu_quota,
        MANDATORY,
    ),
    StackValidationPolicy(
        "priority-class-exists",
        "Every pod's priorityClassName exists; serving pods set one.",
        check_priority_classes,
        MANDATORY,
    ),
    StackValidationPolicy(
        "hpa-max-fits-quota",
        "Each namespace's HPAs at maxReplicas (plus surge) fit its ResourceQuota.",
        check_hpa_fits_quota,
        MANDATORY,
    ),
]
ALL_POLICIES = [*RESOURCE_POLICIES, *STACK_POLICIES]
