"""Pulumi entry point (`main: infra/` in Pulumi.yaml): read config at the edge, then wire the components."""

from __future__ import annotations

import os

import pulumi
import pulumi_kubernetes as kubernetes

from infopt.manifest import load_manifest
from infopt.params import load_params
from infra.program import build
from infra.stack_config import PROJECT, from_pulumi_config, pulumi_config_keys

config = pulumi.Config(PROJECT)
stack_config = from_pulumi_config(config, pulumi_config_keys(), pulumi.get_stack())
params = load_params(os.environ.get("INFOPT_PARAMS", "params.yaml"))
manifest = load_manifest(os.environ.get("INFOPT_MANIFEST", "artifacts/manifest.json"))
provider = kubernetes.Provider("k8s", context=stack_config.kube_context)
components = build(params, manifest, stack_config, provider)

pulumi.export("namespaces", sorted(components.tenants))
pulumi.export("deployments", {name: svc.plan.namespace for name, svc in components.services.items()})
pulumi.export("priorityClasses", components.priority_classes.names)
