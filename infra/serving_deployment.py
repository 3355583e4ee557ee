"""One params deployment as Kubernetes objects: ConfigMap, Deployment, Service, PDB and HPA.

The pod fetches its model at start: an init container runs `infopt artifact fetch` against the stack's
artifact store with the manifest's content hash, so a pod never serves a model other than the one the
manifest names. The HPA scales on the gateway's `request_queue_length` with the manifest's SLA-knee
`queue_target` as the per-pod target. The HPA owns the replica count, so the Deployment sets none.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from typing import Any

import pulumi
from ruamel.yaml import YAML

from infopt.manifest import Manifest
from infopt.params import Params
from infra.labels import (
    ARTIFACT_SHA256,
    COMPONENT,
    CONFIG_SHA256,
    COST_CENTER,
    DEPLOYMENT,
    MODEL_SERVER,
    REQUIRE_DIGESTS,
    SHARED,
    SLA_CLASS,
    STACK,
    TENANT,
    VARIANT,
    server_selector,
)
from infra.resources import declare
from infra.stack_config import StackConfig
from infra.topology import GATEWAY_PORT, VLLM_PORT, ServingPlan, priority_class_name

CONFIG_DIR = "/etc/infopt"
MODELS_DIR = "/models"
RUN_AS = 10001
TERMINATION_SLACK_S = 5  # beyond the gateway's drain time, for the kubelet's SIGTERM-to-SIGKILL path
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "privileged": False,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def scoped_params(params: Params, plan: ServingPlan) -> Params:
    """The params this pod needs: only its deployment and its tenants (least privilege: a pod never holds
    another tenant's API-key hashes, and a change to another tenant does not roll it)."""
    names = set(plan.deployment.tenants)
    return params.model_copy(
        update={"tenants": [t for t in params.tenants if t.name in names], "deployments": [plan.deployment]}
    )


def config_data(params: Params, manifest: Manifest, plan: ServingPlan) -> dict[str, str]:
    buffer = io.StringIO()
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    yaml.dump(scoped_params(params, plan).model_dump(mode="json"), buffer)
    return {"params.yaml": buffer.getvalue(), "manifest.json": manifest.model_dump_json(indent=1) + "\n"}


def _labels(plan: ServingPlan) -> dict[str, str]:
    single = plan.tenants[0]
    return {
        **server_selector(plan.deployment.name),
        COMPONENT: MODEL_SERVER,
        DEPLOYMENT: plan.deployment.name,
        VARIANT: plan.variant.name,
        SLA_CLASS: plan.sla_class,
        TENANT: SHARED if plan.shared else single.name,
        COST_CENTER: SHARED if plan.shared else single.cost_center,
    }


def _probe(path: str, port: str | int, period_s: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period_s, "failureThreshold": failures}


def pod_spec(plan: ServingPlan, params: Params, stack: StackConfig) -> dict[str, Any]:
    name, variant = plan.deployment.name, plan.variant.name
    model_dir = f"{MODELS_DIR}/{variant}"
    mounts = [{"name": "models", "mountPath": MODELS_DIR}, {"name": "tmp", "mountPath": "/tmp"}]
    gateway_args = [
        "serve",
        "--params",
        f"{CONFIG_DIR}/params.yaml",
        "--manifest",
        f"{CONFIG_DIR}/manifest.json",
        "--deployment",
        name,
        "--model-dir",
        model_dir,
        "--host",
        "0.0.0.0",
        "--port",
        str(GATEWAY_PORT),
    ]
    if plan.deployment.engine == "vllm":
        gateway_args += ["--vllm-url", f"http://127.0.0.1:{VLLM_PORT}"]
    containers = [
        {
            "name": "gateway",
            "image": plan.images["gateway"],
            "command": ["infopt"],
            "args": gateway_args,
            "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
            "livenessProbe": _probe("/v2/health/live", "http", 10, 3),
            "readinessProbe": _probe("/v2/health/ready", "http", 5, 2),
            "resources": plan.resources["gateway"],
            "securityContext": CONTAINER_SECURITY,
            "volumeMounts": [*mounts, {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}],
        }
    ]
    if plan.deployment.engine == "vllm":
        containers.append(
            {
                "name": "vllm",
                "image": plan.images["vllm"],
                "args": [
                    "--model",
                    model_dir,
                    "--served-model-name",
                    variant,
                    "--port",
                    str(VLLM_PORT),
                    "--scheduling-policy",
                    "priority",
                    "--enable-prefix-caching",
                ],
                "env": [{"name": "HOME", "value": "/tmp"}, {"name": "HF_HUB_OFFLINE", "value": "1"}],
                "ports": [{"name": "vllm", "containerPort": VLLM_PORT, "protocol": "TCP"}],
                "startupProbe": _probe("/health", "vllm", 10, 60),  # model load and CUDA graph capture take minutes
                "readinessProbe": _probe("/health", "vllm", 5, 2),
                "resources": plan.resources["vllm"],
                "securityContext": CONTAINER_SECURITY,
                "volumeMounts": mounts,
            }
        )
    fetch = {
        "name": "fetch-artifact",
        "image": plan.images["gateway"],
        "command": ["infopt"],
        "args": [
            "artifact",
            "fetch",
            "--url",
            f"{stack.artifact_base_url}/{plan.artifact.sha256}.tar.gz",
            "--sha256",
            plan.artifact.sha256,
            "--dest",
            model_dir,
        ],
        "resources": plan.resources["fetch"],
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }
    # Room for the unpacked model plus the bundle being unpacked beside it.
    models_mib = max(1, math.ceil(2 * plan.artifact.size_bytes / 2**20))
    spec: dict[str, Any] = {
        "priorityClassName": priority_class_name(plan.sla_class),
        "automountServiceAccountToken": False,
        "securityContext": POD_SECURITY,
        "terminationGracePeriodSeconds": math.ceil(params.serving.shutdown_grace_s) + TERMINATION_SLACK_S,
        "initContainers": [fetch],
        "containers": containers,
        "volumes": [
            {"name": "models", "emptyDir": {"sizeLimit": f"{models_mib}Mi"}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "config", "configMap": {"name": f"{name}-config"}},
        ],
    }
    if plan.uses_gpu:
        if stack.gpu_node_selector:
            spec["nodeSelector"] = dict(stack.gpu_node_selector)
        if stack.gpu_tolerations:
            spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in stack.gpu_tolerations]
    return spec


def service_docs(
    plan: ServingPlan, params: Params, manifest: Manifest, stack: StackConfig, stack_name: str
) -> list[dict[str, Any]]:
    """ConfigMap, Deployment, Service, PodDisruptionBudget (when min replicas > 1) and HPA, as manifests."""
    name, ns = plan.deployment.name, plan.namespace
    labels = _labels(plan)
    data = config_data(params, manifest, plan)
    config_sha = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    provenance = {
        ARTIFACT_SHA256: plan.artifact.sha256,
        VARIANT: plan.variant.name,
        STACK: stack_name,
        REQUIRE_DIGESTS: "true" if stack.require_image_digests else "false",
    }
    selector = {"matchLabels": server_selector(name)}
    auto = plan.deployment.autoscaling
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-config", "namespace": ns, "labels": labels},
            "data": data,
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": provenance},
            "spec": {
                "selector": selector,
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": plan.max_surge, "maxUnavailable": 0 if plan.max_surge else 1},
                },
                "template": {
                    "metadata": {"labels": labels, "annotations": {**provenance, CONFIG_SHA256: config_sha}},
                    "spec": pod_spec(plan, params, stack),
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": labels,
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(GATEWAY_PORT),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": {
                "type": "ClusterIP",
                "selector": server_selector(name),
                "ports": [{"name": "http", "port": GATEWAY_PORT, "targetPort": "http", "protocol": "TCP"}],
            },
        },
    ]
    if plan.min_replicas > 1:
        docs.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {"minAvailable": 1, "selector": selector},
            }
        )
    docs.append(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": plan.min_replicas,
                "maxReplicas": plan.max_replicas,
                "metrics": [
                    {
                        "type": "Pods",
                        "pods": {
                            "metric": {"name": auto.metric},
                            "target": {"type": "AverageValue", "averageValue": str(plan.queue_target)},
                        },
                    }
                ],
                "behavior": {
                    "scaleUp": {
                        "stabilizationWindowSeconds": auto.scale_up_stabilization_s,
                        "policies": [{"type": "Pods", "value": auto.scale_up_pods_per_min, "periodSeconds": 60}],
                    },
                    "scaleDown": {
                        "stabilizationWindowSeconds": auto.scale_down_stabilization_s,
                        "policies": [
                            {"type": "Percent", "value": auto.scale_down_percent_per_min, "periodSeconds": 60}
                        ],
                    },
                },
            },
        }
    )
    return docs


class ServingDeployment(pulumi.ComponentResource):
    """Declares one deployment's objects in its namespace, after that namespace and the PriorityClasses."""

    def __init__(
        self,
        name: str,
        plan: ServingPlan,
        params: Params,
        manifest: Manifest,
        stack: StackConfig,
        provider: pulumi.ProviderResource,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        # The alias keeps stacks created before the rename from replacing their objects.
        aliased = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(aliases=[pulumi.Alias(type_="infopt:infra:ModelService")])
        )
        super().__init__("infopt:infra:ServingDeployment", name, None, aliased)
        self.plan = plan
        child = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=depends_on)
        self.docs = service_docs(plan, params, manifest, stack, pulumi.get_stack())
        self.resources = {doc["kind"]: declare(doc, child) for doc in self.docs}
        self.register_outputs({"namespace": plan.namespace, "deployment": plan.deployment.name})
