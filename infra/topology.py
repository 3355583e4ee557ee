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
    max_surge: int  # 0 for GPU pods: a rollout must not need a spare GPU
    images: dict[str, str]  # role (gateway, vllm) -> image reference
    resources: dict[str, dict[str, Any]]  # container role (gateway, vllm, fetch) -> resources block

    @property
    def shared(self) -> bool:
        return len(self.tenants) > 1

    @property
    def uses_gpu(self) -> bool:
        return self.deployment.resources.gpu > 0

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
    bounds = stack.replica_overrides.get(deployment.name)
    low, high = deployment.replicas.min, deployment.replicas.max
    if bounds is not None:
        low, high = bounds.clamp(low), bounds.clamp(high)
    size = deployment.resources
    resources = {"fetch": _size(stack.fetch_resources.cpu, stack.fetch_resources.memory)}
    if deployment.engine == "vllm":
        resources["gateway"] = _size(stack.sidecar_resources.cpu, stack.sidecar_resources.memory)
        resources["vllm"] = _size(size.cpu, size.memory, size.gpu)
    else:
        resources["gateway"] = _size(size.cpu, size.memory, size.gpu)
    shared = len(tenants) > 1
    return ServingPlan(
        deployment=deployment,
        namespace=shared_namespace(deployment.name) if shared else tenant_namespace(tenants[0].name),
        tenants=tenants,
        sla_class=sla_class,
        variant=entry,
        artifact=artifact,
        queue_target=resolved.sla.queue_target if resolved.sla else 1,
        sla=resolved.sla,
        min_replicas=low,
        max_replicas=high,
        max_surge=0 if size.gpu else 1,
        images={role: stack.images[key].ref(stack.image_registry) for role, key in image_keys.items()},
        resources=resources,
    )


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
    for tenant in tenants:
        _check_tenant_quota(tenant, [p for p in services if p.namespace == tenant_namespace(tenant.name)])
    shared_quotas = {}
    for plan in services:
        if plan.shared:
            need = plan.quota_need()
            shared_quotas[plan.namespace] = quota_hard(need["cpu"], need["memory"], need[GPU], need["pods"])
    return Topology(params, manifest, stack, tenants, tuple(services), shared_quotas)
