"""Declare a Kubernetes object from its manifest dict.

Components build plain manifest dicts (camelCase, exactly what the API server receives) and hand them
here, so the offline plan, the schema validation and the policies all see the same shape the program
declares. Names are always explicit (no Pulumi auto-naming), so every value is known at preview time.
"""

from __future__ import annotations

import re
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

_KINDS: dict[tuple[str, str], Any] = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "ResourceQuota"): k8s.core.v1.ResourceQuota,
    ("v1", "LimitRange"): k8s.core.v1.LimitRange,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("networking.k8s.io/v1", "Ingress"): k8s.networking.v1.Ingress,
    ("v1", "Service"): k8s.core.v1.Service,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): k8s.autoscaling.v2.HorizontalPodAutoscaler,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
    ("scheduling.k8s.io/v1", "PriorityClass"): k8s.scheduling.v1.PriorityClass,
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def logical_name(doc: dict[str, Any]) -> str:
    """Unique Pulumi name: kind, namespace and object name."""
    meta = doc["metadata"]
    parts = [doc["kind"].lower(), meta.get("namespace"), meta["name"]]
    return "-".join(part for part in parts if part)


def declare(doc: dict[str, Any], opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """Create the Pulumi resource for a manifest dict; CRDs go through `apiextensions.CustomResource`."""
    api_version, kind = doc["apiVersion"], doc["kind"]
    body = {key: value for key, value in doc.items() if key not in ("apiVersion", "kind")}
    cls = _KINDS.get((api_version, kind))
    if cls is None:
        return k8s.apiextensions.CustomResource(
            logical_name(doc),
            api_version=api_version,
            kind=kind,
            opts=opts,
            metadata=body.pop("metadata"),
            spec=body.pop("spec", None),
            **body,
        )
    return cls(logical_name(doc), opts=opts, **{_snake(key): value for key, value in body.items()})
