"""The Pulumi program as a function: resolve (validate) first, then declare every component."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from infopt.manifest import Manifest
from infopt.params import Params
from infra.metrics import MetricsPlumbing
from infra.priority_classes import PriorityClasses
from infra.serving_deployment import ServingDeployment
from infra.stack_config import StackConfig
from infra.tenant import Tenant, shared_spec, tenant_spec
from infra.topology import Topology, resolve


@dataclass
class Components:
    topology: Topology
    priority_classes: PriorityClasses
    tenants: dict[str, Tenant]  # namespace -> its guardrails (tenant and shared namespaces)
    services: dict[str, ServingDeployment]  # deployment name -> its objects
    metrics: MetricsPlumbing


def build(
    params: Params, manifest: Manifest, stack_config: StackConfig, provider: pulumi.ProviderResource
) -> Components:
    """Declare everything for the current stack; raises TopologyError before declaring anything."""
    topology = resolve(params, manifest, stack_config)
    priority = PriorityClasses("priority-classes", params.sla_classes, provider)
    specs = [tenant_spec(tenant) for tenant in topology.tenants]
    specs += [shared_spec(plan, topology.shared_quotas[plan.namespace]) for plan in topology.services if plan.shared]
    tenants = {spec.namespace: Tenant(spec.namespace, spec, stack_config, provider) for spec in specs}
    services = {
        plan.deployment.name: ServingDeployment(
            plan.deployment.name,
            plan,
            params,
            manifest,
            stack_config,
            provider,
            depends_on=[tenants[plan.namespace], priority],
        )
        for plan in topology.services
    }
    metrics = MetricsPlumbing(
        "metrics", topology, provider, depends_on=[tenants[ns] for ns in topology.serving_namespaces]
    )
    return Components(topology, priority, tenants, services, metrics)
