"""The infopt policy pack's rules: one validator function per rule, each wrapped as a MANDATORY policy.

The rules look at what runs, never at labels or annotations a workload sets on itself: the images and
the commands of the containers, the artifact hash the init container fetches, the namespace each workload
lands in. What only the project knows comes in through policy config (`--policy-pack-config <file>`,
written by `infopt infra policy-config`; the offline plan passes the same object over the analyzer's
Configure call):

- `images-pinned-by-digest`: `requireImageDigests` (bool). Absent: digests are required (fail closed).
- `artifact-is-deployable`: `artifacts`, a map `<sha256> -> {variant, engine, deployable, reason}` made from
  the manifest's decisions. Absent: every model server is a violation (nothing is known to be deployable).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
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

from .k8s import (
    GPU,
    as_map,
    as_seq,
    containers_of,
    kind_of,
    metadata,
    namespace_of,
    option,
    parse_quantity,
    pod_requests,
    pod_spec_of,
    pod_template_of,
    selector_matches,
)

PACK_NAME = "infopt"
DIGEST_REF = re.compile(r"@sha256:[0-9a-f]{64}$")
BUILTIN_PRIORITY_CLASSES = ("system-cluster-critical", "system-node-critical")
FETCH_DEFAULT_TIMEOUT_S = 300  # `infopt artifact fetch` without --timeout-s
PULUMI_DEFAULT_AWAIT_S = 600  # the Kubernetes provider's Deployment await without customTimeouts
CREDENTIAL_KEYS = ("api_key_sha256",)  # params keys that identify callers: a Secret's business


def _where(name: str, container: Mapping[str, Any]) -> str:
    return f"{name}: container {container.get('name', '?')!r}"


def _by_kind(resources: Sequence[Any], kind: str) -> list[Any]:
    return [r for r in resources if kind_of(r.resource_type) == kind]


def _workloads(resources: Sequence[Any]) -> list[tuple[Any, Mapping[str, Any]]]:
    found = []
    for resource in resources:
        pod = pod_spec_of(kind_of(resource.resource_type), resource.props)
        if pod is not None:
            found.append((resource, pod))
    return found


# ----------------------------------------------------------------------------- resource rules
def check_requests_and_limits(args: ResourceValidationArgs, report: ReportViolation) -> None:
    pod = pod_spec_of(kind_of(args.resource_type), args.props)
    if pod is None:
        return
    for container in containers_of(pod):
        resources = as_map(container.get("resources"))
        for section in ("requests", "limits"):
            missing = [r for r in ("cpu", "memory") if r not in as_map(resources.get(section))]
            if missing:
                report(f"{_where(args.name, container)} has no {section} for {missing}", None)


def check_non_root(args: ResourceValidationArgs, report: ReportViolation) -> None:
    pod = pod_spec_of(kind_of(args.resource_type), args.props)
    if pod is None:
        return
    pod_sc = as_map(pod.get("securityContext"))
    for container in containers_of(pod):
        sc = as_map(container.get("securityContext"))
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
    for volume in as_seq(pod.get("volumes")):
        if "hostPath" in as_map(volume):
            report(f"{args.name}: volume {as_map(volume).get('name')!r} is a hostPath", None)
    for container in containers_of(pod):
        sc = as_map(container.get("securityContext"))
        if sc.get("privileged") is True:
            report(f"{_where(args.name, container)} is privileged", None)
        if sc.get("allowPrivilegeEscalation") is True:
            report(f"{_where(args.name, container)} allows privilege escalation", None)


def check_image_digests(args: ResourceValidationArgs, report: ReportViolation) -> None:
    pod = pod_spec_of(kind_of(args.resource_type), args.props)
    if pod is None or (args.get_config() or {}).get("requireImageDigests", True) is False:
        return
    for container in containers_of(pod):
        image = str(container.get("image", ""))
        if not DIGEST_REF.search(image):
            report(f"{_where(args.name, container)} image {image!r} is not pinned by digest (@sha256:...)", None)


def check_hpa_bounds(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if kind_of(args.resource_type) != "HorizontalPodAutoscaler":
        return
    spec = as_map(args.props.get("spec"))
    low, high = int(spec.get("minReplicas", 1)), int(spec.get("maxReplicas", 0))
    if low > high:
        report(f"{args.name}: minReplicas {low} > maxReplicas {high}", None)


def _command(container: Mapping[str, Any]) -> list[str]:
    return [str(part) for part in (*as_seq(container.get("command")), *as_seq(container.get("args")))]


def _fetches(pod: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], dict[str, str | None]]]:
    """Init containers running `infopt artifact fetch`, with their --url, --sha256, --dest and --timeout-s."""
    found = []
    for container in as_seq(pod.get("initContainers")):
        container = as_map(container)
        words = _command(container)
        if words[:3] == ["infopt", "artifact", "fetch"]:
            flags = ("--url", "--sha256", "--dest", "--timeout-s")
            found.append((container, {flag: option(words, flag) for flag in flags}))
    return found


def _model_dirs(container: Mapping[str, Any]) -> list[str]:
    """Where a model server loads its model from: the gateway's --model-dir, vLLM's --model."""
    words = _command(container)
    if words[:2] == ["infopt", "serve"]:
        return [option(words, "--model-dir") or "(none: the model baked into the image or manifest path)"]
    model = option(words, "--model")
    return [model] if model is not None else []


def check_artifact_deployable(args: ResourceValidationArgs, report: ReportViolation) -> None:
    pod = pod_spec_of(kind_of(args.resource_type), args.props)
    if pod is None:
        return
    known = as_map((args.get_config() or {}).get("artifacts"))
    fetched: list[str] = []
    for container, flags in _fetches(pod):
        sha, url, dest = flags["--sha256"], flags["--url"] or "", flags["--dest"]
        where = _where(args.name, container)
        if dest:
            fetched.append(dest.rstrip("/"))
        decision = as_map(known.get(sha)) if sha else {}
        if not sha:
            report(f"{where} fetches {url!r} without --sha256: its content is never verified", None)
        elif not known:
            report(f"{where} fetches artifact {sha}, but the policy config names no deployable artifacts", None)
        elif not decision:
            report(f"{where} fetches artifact {sha}, which is not an artifact of the manifest", None)
        elif decision.get("deployable") is not True:
            report(f"{where} fetches artifact {sha}: {decision.get('reason', 'not deployable')}", None)
        if sha and not url.endswith(f"/{sha}.tar.gz"):
            report(f"{where} verifies {sha} but downloads {url!r}, a bundle of another name", None)
    for container in as_seq(pod.get("containers")):
        container = as_map(container)
        for model_dir in _model_dirs(container):
            if model_dir.rstrip("/") not in fetched:
                report(
                    f"{_where(args.name, container)} serves a model from {model_dir!r}, which no verified "
                    f"`infopt artifact fetch` init container fills (fetched: {fetched})",
                    None,
                )


def check_configmap_credentials(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if kind_of(args.resource_type) != "ConfigMap":
        return
    for key, value in as_map(args.props.get("data")).items():
        for secret_key in CREDENTIAL_KEYS:
            if secret_key in str(value):
                report(
                    f"{args.name}: data[{key!r}] holds {secret_key}; anyone who may read ConfigMaps in the "
                    "namespace reads it. Put it in a Secret",
                    None,
                )


def _probe_budget_s(container: Mapping[str, Any]) -> int:
    probe = as_map(container.get("startupProbe"))
    if not probe:
        return 0
    period = int(probe.get("periodSeconds", 10))
    failures = int(probe.get("failureThreshold", 3))
    return int(probe.get("initialDelaySeconds", 0)) + period * failures


def check_deployment_await(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if kind_of(args.resource_type) != "Deployment":
        return
    pod = pod_spec_of("Deployment", args.props) or {}
    fetch_s = sum(int(flags["--timeout-s"] or FETCH_DEFAULT_TIMEOUT_S) for _, flags in _fetches(pod))
    startup_s = max((_probe_budget_s(as_map(c)) for c in as_seq(pod.get("containers"))), default=0)
    needed = fetch_s + startup_s
    timeouts = args.opts.custom_timeouts
    for phase in ("create", "update"):
        seconds = float(getattr(timeouts, f"{phase}_seconds", 0) or 0) or PULUMI_DEFAULT_AWAIT_S
        if seconds < needed:
            report(
                f"{args.name}: Pulumi waits {seconds:g} s on {phase}, less than the artifact fetch ({fetch_s} s) "
                f"plus the startup probe ({startup_s} s); set customTimeouts.{phase} to at least {needed} s",
                None,
            )


# ----------------------------------------------------------------------------- stack rules
def _declared_namespaces(resources: Sequence[Any]) -> dict[str, Any]:
    return {str(metadata(r.props).get("name")): r for r in _by_kind(resources, "Namespace")}


def _is_default_deny(policy: Any) -> bool:
    spec = as_map(policy.props.get("spec"))
    return (
        not as_map(spec.get("podSelector"))
        and {"Ingress", "Egress"} <= set(as_seq(spec.get("policyTypes")))
        and not as_seq(spec.get("ingress"))
        and not as_seq(spec.get("egress"))
    )


def check_namespace_guardrails(args: StackValidationArgs, report: ReportViolation) -> None:
    """Every namespace that hosts a workload of the stack, whatever its labels."""
    resources = args.resources
    declared = _declared_namespaces(resources)
    hosting: dict[str, Any] = {}
    for resource, _ in _workloads(resources):
        hosting.setdefault(namespace_of(resource.props), resource)
    for ns, first in sorted(hosting.items()):
        urn = declared[ns].urn if ns in declared else first.urn
        if ns not in declared:
            report(f"namespace {ns!r} hosts {first.name} but is not declared by the stack (no guardrails)", urn)
        here = [r for r in resources if namespace_of(r.props) == ns and kind_of(r.resource_type) != "Namespace"]
        kinds = {kind_of(r.resource_type) for r in here}
        for needed in ("ResourceQuota", "LimitRange"):
            if needed not in kinds:
                report(f"namespace {ns!r} hosts workloads but has no {needed}", urn)
        if not any(kind_of(r.resource_type) == "NetworkPolicy" and _is_default_deny(r) for r in here):
            report(f"namespace {ns!r} hosts workloads but has no default-deny NetworkPolicy (all pods)", urn)


def _quota_hard(resources: Sequence[Any], namespace: str) -> dict[str, Decimal] | None:
    quotas = [r for r in _by_kind(resources, "ResourceQuota") if namespace_of(r.props) == namespace]
    if not quotas:
        return None
    hard: dict[str, Decimal] = {}
    for quota in quotas:  # several quotas all apply: the smallest bound wins
        for key, value in as_map(as_map(quota.props.get("spec")).get("hard")).items():
            amount = parse_quantity(value)
            hard[key] = min(amount, hard.get(key, amount))
    return hard


def check_gpu_quota(args: StackValidationArgs, report: ReportViolation) -> None:
    for resource, pod in _workloads(args.resources):
        if pod_requests(pod)[GPU] <= 0:
            continue
        ns = namespace_of(resource.props)
        allowed = (_quota_hard(args.resources, ns) or {}).get(f"requests.{GPU}", Decimal(0))
        if allowed <= 0:
            report(
                f"{resource.name}: requests GPUs in namespace {ns!r}, whose ResourceQuota allows none "
                f"(requests.{GPU} = {allowed})",
                resource.urn,
            )


def check_priority_classes(args: StackValidationArgs, report: ReportViolation) -> None:
    declared = {metadata(r.props).get("name") for r in _by_kind(args.resources, "PriorityClass")}
    for resource, pod in _workloads(args.resources):
        name = pod.get("priorityClassName")
        if name is None:
            report(f"{resource.name}: pod has no priorityClassName", resource.urn)
        elif name not in declared and name not in BUILTIN_PRIORITY_CLASSES:
            report(
                f"{resource.name}: priorityClassName {name!r} does not exist (declared: {sorted(declared)})",
                resource.urn,
            )


def _max_surge(spec: Mapping[str, Any], replicas: int) -> int:
    rolling = as_map(as_map(spec.get("strategy")).get("rollingUpdate"))
    surge = rolling.get("maxSurge", "25%")  # the Kubernetes default
    if isinstance(surge, str) and surge.endswith("%"):
        return math.ceil(replicas * int(surge[:-1]) / 100)
    return int(surge)


def check_hpa_fits_quota(args: StackValidationArgs, report: ReportViolation) -> None:
    needs: dict[str, dict[str, Decimal]] = {}
    urns: dict[str, list[str]] = {}
    for hpa in _by_kind(args.resources, "HorizontalPodAutoscaler"):
        spec, ns = as_map(hpa.props.get("spec")), namespace_of(hpa.props)
        target = as_map(spec.get("scaleTargetRef"))
        workloads = [
            r
            for r in _by_kind(args.resources, str(target.get("kind")))
            if namespace_of(r.props) == ns and metadata(r.props).get("name") == target.get("name")
        ]
        if not workloads:
            report(f"{hpa.name}: scale target {target.get('kind')}/{target.get('name')} is not in the stack", hpa.urn)
            continue
        workload = workloads[0]
        high = int(spec.get("maxReplicas", 0))
        pods = high + _max_surge(as_map(workload.props.get("spec")), high)
        per_pod = pod_requests(pod_spec_of(kind_of(workload.resource_type), workload.props) or {})
        total = needs.setdefault(ns, {"cpu": Decimal(0), "memory": Decimal(0), GPU: Decimal(0), "pods": Decimal(0)})
        for key, amount in per_pod.items():
            total[key] += amount * pods
        total["pods"] += pods
        urns.setdefault(ns, []).append(hpa.urn)
    checks = {
        "cpu": ("requests.cpu", "limits.cpu", "cpu"),
        "memory": ("requests.memory", "limits.memory", "memory"),
        GPU: (f"requests.{GPU}",),
        "pods": ("pods",),
    }
    for ns, need in needs.items():
        hard = _quota_hard(args.resources, ns)
        if hard is None:
            continue
        for resource_name, keys in checks.items():
            for key in keys:
                if key in hard and need[resource_name] > hard[key]:
                    report(
                        f"namespace {ns!r}: HPAs at maxReplicas (+ rollout surge) need {resource_name} "
                        f"{need[resource_name]:f}, ResourceQuota {key} is {hard[key]:f}",
                        urns[ns][0],
                    )


def check_disruption_budgets(args: StackValidationArgs, report: ReportViolation) -> None:
    """Every Deployment/StatefulSet has a PodDisruptionBudget selecting its pods, so a node drain or a
    cluster-autoscaler scale-down evicts its replicas one at a time instead of all at once."""
    budgets = _by_kind(args.resources, "PodDisruptionBudget")
    for resource in args.resources:
        kind = kind_of(resource.resource_type)
        if kind not in ("Deployment", "StatefulSet"):
            continue
        template = pod_template_of(kind, resource.props) or {}
        labels = as_map(as_map(template.get("metadata")).get("labels"))
        ns = namespace_of(resource.props)
        covered = any(
            namespace_of(pdb.props) == ns
            and selector_matches(as_map(as_map(pdb.props.get("spec")).get("selector")), labels)
            for pdb in budgets
        )
        if not covered:
            report(f"{resource.name}: no PodDisruptionBudget in {ns!r} selects its pods", resource.urn)


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
        "Every container image is pinned by digest unless the policy config sets requireImageDigests: false.",
        check_image_digests,
        MANDATORY,
        PolicyConfigSchema({"requireImageDigests": {"type": "boolean"}}),
    ),
    ResourceValidationPolicy("hpa-replica-bounds", "HPA minReplicas <= maxReplicas.", check_hpa_bounds, MANDATORY),
    ResourceValidationPolicy(
        "artifact-is-deployable",
        "A model server loads only what a verified `infopt artifact fetch` brings in, and that artifact is one "
        "the manifest allows (policy config `artifacts`).",
        check_artifact_deployable,
        MANDATORY,
        PolicyConfigSchema({"artifacts": {"type": "object"}}),
    ),
    ResourceValidationPolicy(
        "no-credentials-in-configmaps",
        "Tenant API-key hashes live in Secrets, not in ConfigMaps readable by tenant viewers.",
        check_configmap_credentials,
        MANDATORY,
    ),
    ResourceValidationPolicy(
        "deployment-await-covers-startup",
        "Pulumi's await on a Deployment (customTimeouts) covers the artifact fetch plus the startup probe.",
        check_deployment_await,
        MANDATORY,
    ),
]
STACK_POLICIES = [
    StackValidationPolicy(
        "namespace-guardrails",
        "Every namespace that hosts a workload is declared with a ResourceQuota, a LimitRange and a "
        "default-deny NetworkPolicy.",
        check_namespace_guardrails,
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
        "Every pod sets a priorityClassName that exists.",
        check_priority_classes,
        MANDATORY,
    ),
    StackValidationPolicy(
        "hpa-max-fits-quota",
        "Each namespace's HPAs at maxReplicas (plus surge) fit its ResourceQuota.",
        check_hpa_fits_quota,
        MANDATORY,
    ),
    StackValidationPolicy(
        "workloads-have-disruption-budgets",
        "Every Deployment and StatefulSet has a PodDisruptionBudget selecting its pods.",
        check_disruption_budgets,
        MANDATORY,
    ),
]
ALL_POLICIES = [*RESOURCE_POLICIES, *STACK_POLICIES]
