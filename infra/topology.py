"""What runs where: params + manifest + stack config resolved and validated before any resource exists.

Everything the components need (namespace, SLA class, artifact, HPA target, replica bounds, container
sizes, quota needs) is decided here as plain values, so a bad input fails with a `TopologyError` naming
the value and the allowed ones, and the components only translate these values into Kubernetes objects.

Shared deployments (several tenants) run in their own namespace `inference-shared-<deployment>`, whose
ResourceQuota is the sum of that deployment's own needs. No tenant's quota is charged for a model it
shares, so one tenant's quota cannot starve another's share; per-tenant isolation inside the shared pods
is the gateway's job (per-tenant token buckets, token budgets and SLA-class queues from params.tenants).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from infopt.deployments import DeploymentError, resolve_deployment
from infopt.manifest import Artifact, Manifest, VariantEntry
from infopt.params import Deployment, Params, Tenant
from infopt.quantity import format_cpu, format_memory, parse_quantity, pod_requests
from infopt.sla import SlaPlan
from infra.stack_config import StackConfig

GPU = "nvidia.com/gpu"
GATEWAY_PORT = 8000  # the gateway's --port; Service, probes and NetworkPolicy follow it
VLLM_PORT = 8001  # vLLM's --port inside the pod; only the gateway (127.0.0.1) talks to it
VLLM_STARTUP_PERIOD_S = 10
VLLM_STARTUP_FAILURES = 60  # 600 s for model load and CUDA graph capture before the kubelet restarts vLLM
GATEWAY_STARTUP_S = 60  # an in-process ONNX/torch model loads in seconds; a minute of margin


class TopologyError(ValueError):
    """params, manifest and stack config disagree; the message names the value and the allowed ones."""


def tenant_namespace(tenant: str) -> str:
    return f"inference-{tenant}"


def shared_namespace(deployment: str) -> str:
    return f"inference-shared-{deployment}"


def priority_class_name(sla_class: str) -> str:
    return f"infopt-{sla_class}"


def gateway_image_key(engine: str) -> str:
    return f"gateway-{engine}"


def _size(cpu: str, memory: str, gpu: int = 0) -> dict[str, Any]:
    """requests == limits: serving pods get Guaranteed QoS, and quota arithmetic stays exact."""
    amounts: dict[str, str] = {"cpu": cpu, "memory": memory}
    limits = dict(amounts)
    if gpu:
        limits[GPU] = str(gpu)
    return {"requests": amounts, "limits": limits}


@dataclass(frozen=True)
class ServingPlan:
    """One params deployment, resolved for this stack."""

    deployment: Deployment
    namespace: str
    tenants: tuple[Tenant, ...]
    sla_class: str  # the highest class among its tenants
    variant: VariantEntry
    artifact: Artifact
    queue_target: int  # the deployment's SLA plan (infopt/sla.py); vLLM: 1 (its HPA reads waiting requests)
    sla: SlaPlan | None
    min_replicas: int
    max_replicas: int
    max_surge: int  # pods a rollout may add; 0 only for GPU pods rolled in place (stack gpuRollout: inPlace)
    max_unavailable: int  # 0 whenever a surge pod exists: a rollout never drops below the current count
    images: dict[str, str]  # role (gateway, vllm) -> image reference
    resources: dict[str, dict[str, Any]]  # container role (gateway, vllm, fetch) -> resources block

    @property
    def shared(self) -> bool:
        return len(self.tenants) > 1

    @property
    def uses_gpu(self) -> bool:
        return self.deployment.resources.gpu > 0

    @property
    def startup_budget_s(self) -> int:
        """How long the slowest container may take to become ready once the init container is done."""
        if self.deployment.engine == "vllm":
            return VLLM_STARTUP_PERIOD_S * VLLM_STARTUP_FAILURES
        return GATEWAY_STARTUP_S

    @property
    def pod_requests(self) -> dict[str, Decimal]:
        containers = [{"resources": self.resources[role]} for role in ("gateway", "vllm") if role in self.resources]
        return pod_requests({"containers": containers, "initContainers": [{"resources": self.resources["fetch"]}]})

    @property
    def peak_pods(self) -> int:
        """Pods that can exist at once: max replicas plus the rollout surge."""
        return self.max_replicas + self.max_surge

    def quota_need(self) -> dict[str, Decimal]:
        need = {name: amount * self.peak_pods for name, amount in self.pod_requests.items()}
        need["pods"] = Decimal(self.peak_pods)
        return need


@dataclass(frozen=True)
class Topology:
    params: Params
    manifest: Manifest
    stack: StackConfig
    tenants: tuple[Tenant, ...]
    services: tuple[ServingPlan, ...]
    shared_quotas: dict[str, dict[str, str]] = field(default_factory=dict)  # namespace -> hard

    @property
    def serving_namespaces(self) -> list[str]:
        return sorted({plan.namespace for plan in self.services})

    @property
    def workload_identity_subjects(self) -> list[str]:
        """The Kubernetes identities the cloud must trust to read the artifact store (IRSA trust policy
        `sub`, GKE `roles/iam.workloadIdentityUser` members `PROJECT.svc.id.goog[<ns>/<sa>]`)."""
        account = self.stack.workload_identity.service_account
        return [f"system:serviceaccount:{ns}:{account}" for ns in self.serving_namespaces]


def quota_hard(cpu: Decimal, memory: Decimal, gpu: Decimal, pods: Decimal) -> dict[str, str]:
    """ResourceQuota `hard`. Extended resources (GPUs) only take the `requests.` prefix in a quota, since
    Kubernetes does not overcommit them; a zero GPU quota forbids GPU pods in the namespace."""
    return {
        "requests.cpu": format_cpu(cpu),
        "limits.cpu": format_cpu(cpu),
        "requests.memory": format_memory(memory),
        "limits.memory": format_memory(memory),
        f"requests.{GPU}": str(int(gpu)),
        "pods": str(int(pods)),
    }


def tenant_quota_hard(tenant: Tenant) -> dict[str, str]:
    quota = tenant.quota
    return quota_hard(parse_quantity(quota.cpu), parse_quantity(quota.memory), Decimal(quota.gpu), Decimal(quota.pods))


def _check_subset(kind: str, chosen: list[str], known: list[str]) -> None:
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise TopologyError(f"stack config infopt:{kind}: unknown {kind} {unknown}; params.yaml has {known}")


def _queue_target(deployment: Deployment, sla: SlaPlan | None) -> int:
    """The HPA's per-pod queue target: params' explicit one, else the deployment's SLA plan."""
    if deployment.autoscaling.queue_target is not None:
        return deployment.autoscaling.queue_target
    if sla is None:
        raise TopologyError(
            f"deployments[{deployment.name}].autoscaling.queue_target is required for engine {deployment.engine}: "
            "there is no classifier sweep to derive the HPA target from"
        )
    return sla.queue_target


def _resolve_service(params: Params, manifest: Manifest, stack: StackConfig, deployment: Deployment) -> ServingPlan:
    try:
        resolved = resolve_deployment(params, manifest, deployment.name)
    except DeploymentError as error:
        raise TopologyError(str(error)) from None
    tenants, sla_class, entry, artifact = resolved.tenants, resolved.sla_class, resolved.variant, resolved.artifact
    image_keys = {"gateway": gateway_image_key(deployment.engine)}
    if deployment.engine == "vllm":
        image_keys["vllm"] = "vllm"
    missing = [key for key in image_keys.values() if key not in stack.images]
    if missing:
        raise TopologyError(
            f"deployments[{deployment.name}] (engine {deployment.engine}) needs infopt:images {missing}; "
            f"the stack has {sorted(stack.images)}"
        )
    low, high = _replica_bounds(stack, deployment)
    size = deployment.resources
    resources = {"fetch": _size(stack.fetch_resources.cpu, stack.fetch_resources.memory)}
    if deployment.engine == "vllm":
        resources["gateway"] = _size(stack.sidecar_resources.cpu, stack.sidecar_resources.memory)
        resources["vllm"] = _size(size.cpu, size.memory, size.gpu)
    else:
        resources["gateway"] = _size(size.cpu, size.memory, size.gpu)
    shared = len(tenants) > 1
    in_place = _check_gpu(stack, deployment, low)
    if deployment.engine == "vllm" and parse_quantity(stack.vllm_shm_size) >= parse_quantity(size.memory):
        raise TopologyError(
            f"deployments[{deployment.name}]: infopt:vllmShmSize {stack.vllm_shm_size} is not below the vLLM "
            f"container's memory {size.memory}; /dev/shm is memory-backed and counts toward that limit"
        )
    return ServingPlan(
        deployment=deployment,
        namespace=shared_namespace(deployment.name) if shared else tenant_namespace(tenants[0].name),
        tenants=tenants,
        sla_class=sla_class,
        variant=entry,
        artifact=artifact,
        queue_target=_queue_target(deployment, resolved.sla),
        sla=resolved.sla,
        min_replicas=low,
        max_replicas=high,
        max_surge=0 if in_place else 1,
        max_unavailable=1 if in_place else 0,
        images={role: stack.images[key].ref(stack.image_registry) for role, key in image_keys.items()},
        resources=resources,
    )


def _replica_bounds(stack: StackConfig, deployment: Deployment) -> tuple[int, int]:
    """params replicas, with this stack's override values replacing them; an override that would pin the HPA
    (min == max where params let it scale) or a min below 2 on a highAvailability stack is rejected."""
    name, replicas = deployment.name, deployment.replicas
    bounds = stack.replica_overrides.get(name)
    low = bounds.min if bounds is not None and bounds.min is not None else replicas.min
    high = bounds.max if bounds is not None and bounds.max is not None else replicas.max
    where = f"infopt:replicaOverrides.{name}"
    if low > high:
        raise TopologyError(
            f"{where}: min {low} > max {high} (params.yaml deployments[{name}].replicas is "
            f"{replicas.min}..{replicas.max}; an override value replaces the params value)"
        )
    if low == high and replicas.min != replicas.max:
        raise TopologyError(
            f"{where}: replicas {low}..{high} would pin the HPA at {low} (params.yaml lets it scale "
            f"{replicas.min}..{replicas.max}); set max above min"
        )
    if stack.high_availability and low < 2:
        raise TopologyError(
            f"deployments[{name}]: min replicas {low} on a highAvailability stack; a drain or rollout would leave "
            f"it without a serving pod. Set {where}.min (or params replicas.min) to 2 or more"
        )
    return low, high


def _check_gpu(stack: StackConfig, deployment: Deployment, min_replicas: int) -> bool:
    """Validate a GPU deployment's scheduling and rollout; True when it rolls in place (maxSurge 0)."""
    if not deployment.resources.gpu:
        return False
    name = deployment.name
    if not stack.gpu_node_selector and not stack.gpu_tolerations:
        raise TopologyError(
            f"deployments[{name}] requests {deployment.resources.gpu} GPU(s) but the stack sets neither "
            "infopt:gpuNodeSelector nor infopt:gpuTolerations; on tainted GPU nodes its pods would stay Pending "
            "(e.g. gpuTolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}])"
        )
    if stack.gpu_rollout == "inPlace" and min_replicas < 2:
        raise TopologyError(
            f"deployments[{name}]: infopt:gpuRollout inPlace with min replicas {min_replicas} replaces the only "
            "pod before its successor runs (a full outage on every rollout); use gpuRollout: surge (the quota "
            "then needs one more GPU) or min replicas >= 2"
        )
    return stack.gpu_rollout == "inPlace"


def _check_namespaces(services: list[ServingPlan], tenants: tuple[Tenant, ...]) -> None:
    owners: dict[str, list[str]] = {}
    for tenant in tenants:
        owners.setdefault(tenant_namespace(tenant.name), []).append(f"tenant {tenant.name}")
    for plan in services:
        if plan.shared:
            owners.setdefault(plan.namespace, []).append(f"shared deployment {plan.deployment.name}")
    clashes = {ns: who for ns, who in owners.items() if len(who) > 1}
    if clashes:
        detail = "; ".join(f"{ns}: {', '.join(who)}" for ns, who in sorted(clashes.items()))
        raise TopologyError(f"generated namespaces collide ({detail}); rename the tenant or the deployment")


def _describe_need(need: Mapping[str, Decimal]) -> str:
    return (
        f"cpu {format_cpu(need['cpu'])}, memory {format_memory(need['memory'])}, "
        f"gpu {int(need[GPU])}, pods {int(need['pods'])}"
    )


def _check_tenant_quota(tenant: Tenant, plans: list[ServingPlan]) -> None:
    quota = tenant.quota
    allowed = {
        "cpu": parse_quantity(quota.cpu),
        "memory": parse_quantity(quota.memory),
        GPU: Decimal(quota.gpu),
        "pods": Decimal(quota.pods),
    }
    need = {name: Decimal(0) for name in allowed}
    for plan in plans:
        for name, amount in plan.quota_need().items():
            need[name] += amount
    over = [name for name in allowed if need[name] > allowed[name]]
    if over:
        detail = ", ".join(
            f"{plan.deployment.name}: {plan.peak_pods} pods (max {plan.max_replicas} + surge {plan.max_surge}) "
            f"x {_describe_need({**plan.pod_requests, 'pods': Decimal(1)})}"
            for plan in plans
        )
        raise TopologyError(
            f"tenants[{tenant.name}].quota is too small for {over}: deployments need {_describe_need(need)} "
            f"({detail}); quota allows {_describe_need(allowed)}"
        )


def resolve(params: Params, manifest: Manifest, stack: StackConfig) -> Topology:
    """Validate and resolve everything; raises TopologyError before any resource is declared."""
    _check_subset("tenants", stack.tenants, [t.name for t in params.tenants])
    _check_subset("deployments", stack.deployments, [d.name for d in params.deployments])
    _check_subset("replicaOverrides", list(stack.replica_overrides), stack.deployments)
    tenants = tuple(params.tenant(name) for name in stack.tenants)
    services = []
    for name in stack.deployments:
        deployment = params.deployment(name)
        absent = [t for t in deployment.tenants if t not in stack.tenants]
        if absent:
            raise TopologyError(
                f"deployments[{name}] serves tenants {absent} that this stack does not run "
                f"(infopt:tenants is {stack.tenants})"
            )
        services.append(_resolve_service(params, manifest, stack, deployment))
    _check_namespaces(services, tenants)
    for tenant in tenants:
        _check_tenant_quota(tenant, [p for p in services if p.namespace == tenant_namespace(tenant.name)])
    shared_quotas = {}
    for plan in services:
        if plan.shared:
            need = plan.quota_need()
            shared_quotas[plan.namespace] = quota_hard(need["cpu"], need["memory"], need[GPU], need["pods"])
    return Topology(params, manifest, stack, tenants, tuple(services), shared_quotas)
