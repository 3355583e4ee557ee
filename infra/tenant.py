"""A tenancy boundary: namespace, quota, default container sizes, default-deny network, read-only RBAC.

Used for each tenant's namespace (`inference-<tenant>`) and for each shared deployment's namespace
(`inference-shared-<deployment>`), so both get the same guardrails the policy pack demands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from infopt.params import Tenant as TenantParams
from infra.labels import (
    COMPONENT,
    COST_CENTER,
    COST_CENTERS_ANNOTATION,
    MODEL_SERVER,
    PART_OF,
    PROJECT_LABEL,
    SHARED,
    SLA_CLASS,
    TENANT,
    TENANTS_ANNOTATION,
)
from infra.resources import declare
from infra.stack_config import StackConfig
from infra.topology import GATEWAY_PORT, ServingPlan, tenant_namespace, tenant_quota_hard

RBAC = "rbac.authorization.k8s.io"
VIEW_RULES = [  # what a tenant's people may see of their serving: no secrets, no writes
    {
        "apiGroups": [""],
        "resources": ["pods", "pods/log", "services", "endpoints", "configmaps", "events"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": ["apps"], "resources": ["deployments", "replicasets"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["get", "list", "watch"]},
]


@dataclass(frozen=True)
class NamespaceSpec:
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]
    quota_hard: dict[str, str]
    groups: tuple[str, ...]  # identity-provider groups bound to the read-only Role


def tenant_group(tenant: TenantParams) -> str:
    return tenant.group or f"tenant-{tenant.name}"


def tenant_spec(tenant: TenantParams) -> NamespaceSpec:
    return NamespaceSpec(
        namespace=tenant_namespace(tenant.name),
        labels={
            PART_OF: PROJECT_LABEL,
            TENANT: tenant.name,
            COST_CENTER: tenant.cost_center,
            SLA_CLASS: tenant.sla_class,
        },
        annotations={},
        quota_hard=tenant_quota_hard(tenant),
        groups=(tenant_group(tenant),),
    )


def shared_spec(plan: ServingPlan, quota_hard: dict[str, str]) -> NamespaceSpec:
    return NamespaceSpec(
        namespace=plan.namespace,
        labels={PART_OF: PROJECT_LABEL, TENANT: SHARED, COST_CENTER: SHARED, SLA_CLASS: plan.sla_class},
        annotations={
            TENANTS_ANNOTATION: ",".join(t.name for t in plan.tenants),
            COST_CENTERS_ANNOTATION: ",".join(sorted({t.cost_center for t in plan.tenants})),
        },
        quota_hard=quota_hard,
        groups=tuple(tenant_group(t) for t in plan.tenants),
    )


def namespace_docs(spec: NamespaceSpec, stack: StackConfig) -> list[dict[str, Any]]:
    """Namespace, ResourceQuota, LimitRange, two NetworkPolicies, Role and RoleBinding, as manifests."""
    ns = spec.namespace
    size = {"cpu": stack.default_container.cpu, "memory": stack.default_container.memory}
    servers = {"matchLabels": {PART_OF: PROJECT_LABEL, COMPONENT: MODEL_SERVER}}

    def from_namespace(name: str) -> dict[str, Any]:
        return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}

    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "labels": spec.labels,
                **({"annotations": spec.annotations} if spec.annotations else {}),
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "quota", "namespace": ns},
            "spec": {"hard": spec.quota_hard},
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "container-defaults", "namespace": ns},
            "spec": {"limits": [{"type": "Container", "default": size, "defaultRequest": size}]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny", "namespace": ns},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-serving", "namespace": ns},
            "spec": {
                "podSelector": servers,
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [from_namespace(stack.ingress_namespace), from_namespace(stack.monitoring_namespace)],
                        "ports": [{"protocol": "TCP", "port": GATEWAY_PORT}],
                    }
                ],
                "egress": [
                    {
                        "to": [from_namespace("kube-system")],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    },
                    {
                        "to": [{"ipBlock": {"cidr": stack.artifact_store_cidr}}],
                        "ports": [{"protocol": "TCP", "port": stack.artifact_store_port}],
                    },
                ],
            },
        },
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "Role",
            "metadata": {"name": "tenant-viewer", "namespace": ns},
            "rules": VIEW_RULES,
        },
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "tenant-viewer", "namespace": ns},
            "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "tenant-viewer"},
            "subjects": [{"apiGroup": RBAC, "kind": "Group", "name": group} for group in spec.groups],
        },
    ]


class Tenant(pulumi.ComponentResource):
    """Declares one namespace's guardrails; everything namespaced waits for the Namespace."""

    def __init__(
        self,
        name: str,
        spec: NamespaceSpec,
        stack: StackConfig,
        provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("infopt:infra:Tenant", name, None, opts)
        self.namespace = spec.namespace
        docs = namespace_docs(spec, stack)
        self.namespace_resource = declare(docs[0], pulumi.ResourceOptions(parent=self, provider=provider))
        inner = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[self.namespace_resource])
        self.resources = [self.namespace_resource, *(declare(doc, inner) for doc in docs[1:])]
        self.register_outputs({"namespace": self.namespace})
