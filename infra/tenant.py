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
DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
POD_SECURITY = {  # Pod Security Admission: the API server itself rejects pods that are not `restricted`
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
VIEW_RULES = [  # what a tenant's people may see of their serving: no secrets (params.yaml with key hashes), no writes
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
    shared: bool = False  # several tenants' groups: their logs would show each other's traffic


def view_rules(shared: bool) -> list[dict[str, Any]]:
    """The tenant-viewer Role; in a shared namespace without pods/log, which carry every tenant's requests."""
    if not shared:
        return VIEW_RULES
    core = {**VIEW_RULES[0], "resources": [r for r in VIEW_RULES[0]["resources"] if r != "pods/log"]}
    return [core, *VIEW_RULES[1:]]


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
        shared=True,
    )


def namespace_docs(spec: NamespaceSpec, stack: StackConfig) -> list[dict[str, Any]]:
    """Namespace, ResourceQuota, LimitRange, two NetworkPolicies, ServiceAccount, Role and RoleBinding."""
    ns = spec.namespace
    dns = stack.dns
    dns_peers: list[dict[str, Any]] = [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": dns.namespace}},
            "podSelector": {"matchLabels": dict(dns.pod_labels)},
        },
        *({"ipBlock": {"cidr": cidr}} for cidr in dns.node_local_cidrs),
    ]
    store_egress = [
        {"to": [rule.peer()], "ports": [{"protocol": "TCP", "port": port} for port in rule.ports]}
        for rule in stack.artifact_store.egress
    ]
    identity = stack.workload_identity
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
                "labels": {**spec.labels, **POD_SECURITY},
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
                        "from": [
                            *(
                                [from_namespace(stack.ingress.controller_namespace)]
                                if stack.ingress.controller_namespace
                                else []
                            ),
                            *({"ipBlock": {"cidr": cidr}} for cidr in stack.ingress.source_cidrs),
                            from_namespace(stack.monitoring_namespace),
                        ],
                        "ports": [{"protocol": "TCP", "port": GATEWAY_PORT}],
                    }
                ],
                "egress": [{"to": dns_peers, "ports": DNS_PORTS}, *store_egress],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": identity.service_account,
                "namespace": ns,
                **({"annotations": identity.annotations()} if identity.annotations() else {}),
            },
            "automountServiceAccountToken": False,  # the pods never call the API server
        },
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "Role",
            "metadata": {"name": "tenant-viewer", "namespace": ns},
            "rules": view_rules(spec.shared),
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
