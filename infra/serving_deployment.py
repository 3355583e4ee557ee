"""One params deployment as Kubernetes objects: Secret, ConfigMap, Deployment, Service, PDB, HPA and route.

The pod fetches its model at start: an init container runs `infopt artifact fetch` against the stack's
artifact store with the manifest's content hash, so a pod never serves a model other than the one the
manifest names; it runs as the namespace's workload-identity ServiceAccount, so a private S3/GCS bucket can
be read. The HPA scales on the gateway's `request_queue_length` (and, for vLLM, on the waiting requests vLLM
reports) with the manifest's SLA-knee `queue_target` as the per-pod target. The HPA owns the replica
count, so the Deployment sets none. params.yaml (with the tenants' API-key hashes) is a Secret, which the
tenant-viewer Role cannot read; the manifest is a ConfigMap.
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
    SHARED,
    SLA_CLASS,
    STACK,
    TENANT,
    VARIANT,
    server_selector,
)
from infra.metrics import VLLM_WAITING
from infra.resources import declare
from infra.stack_config import StackConfig
from infra.topology import (
    GATEWAY_PORT,
    VLLM_PORT,
    VLLM_STARTUP_FAILURES,
    VLLM_STARTUP_PERIOD_S,
    ServingPlan,
    priority_class_name,
)

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
    """The pod's /etc/infopt: params.yaml (goes into a Secret) and manifest.json (a ConfigMap)."""
    buffer = io.StringIO()
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    yaml.dump(scoped_params(params, plan).model_dump(mode="json"), buffer)
    return {"params.yaml": buffer.getvalue(), "manifest.json": manifest.model_dump_json(indent=1) + "\n"}


def await_seconds(plan: ServingPlan, stack: StackConfig) -> int:
    """Pulumi's wait for the rollout: image pull, the artifact download, the slowest start-up, and slack.
    Pulumi's default (10 minutes) is shorter than a vLLM pod's 600 s startup probe plus its fetch."""
    budget = stack.deploy_await
    return budget.image_pull_s + stack.artifact_store.fetch_timeout_s + plan.startup_budget_s + budget.slack_s


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


def fetch_env(stack: StackConfig) -> list[dict[str, str]]:
    """The fetch container's environment: a writable HOME, and the S3 client's region/endpoint if set."""
    store = stack.artifact_store
    env = [{"name": "HOME", "value": "/tmp"}]
    if store.region:
        env.append({"name": "AWS_REGION", "value": store.region})
    if store.endpoint_url:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": store.endpoint_url})
    return env


def route_doc(plan: ServingPlan, stack: StackConfig, labels: dict[str, str]) -> dict[str, Any] | None:
    """The Ingress or HTTPRoute that sends `<deployment>.<domain>` to the gateway Service (none: no route)."""
    ingress, name, ns = stack.ingress, plan.deployment.name, plan.namespace
    if ingress.mode == "none":
        return None
    host = ingress.host(name)
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": labels}
    if ingress.mode == "gatewayApi":
        assert ingress.gateway is not None  # the stack config model guarantees it for this mode
        parent: dict[str, Any] = {"name": ingress.gateway.name, "namespace": ingress.gateway.namespace}
        if ingress.gateway.section_name:
            parent["sectionName"] = ingress.gateway.section_name
        return {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": meta,
            "spec": {
                "parentRefs": [parent],
                "hostnames": [host],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                        "backendRefs": [{"name": name, "port": GATEWAY_PORT}],
                    }
                ],
            },
        }
    if ingress.annotations:
        meta["annotations"] = dict(ingress.annotations)
    spec: dict[str, Any] = {
        "ingressClassName": ingress.class_name,
        "rules": [
            {
                "host": host,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": name, "port": {"number": GATEWAY_PORT}}},
                        }
                    ]
                },
            }
        ],
    }
    if ingress.tls:
        spec["tls"] = [{"hosts": [host], "secretName": f"{name}-tls"}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def pod_spec(plan: ServingPlan, params: Params, stack: StackConfig) -> dict[str, Any]:
    name, variant = plan.deployment.name, plan.variant.name
    model_dir = f"{MODELS_DIR}/{variant}"
    mounts = [{"name": "models", "mountPath": MODELS_DIR}, {"name": "tmp", "mountPath": "/tmp"}]
    store = stack.artifact_store
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
                # model load and CUDA graph capture take minutes
                "startupProbe": _probe("/health", "vllm", VLLM_STARTUP_PERIOD_S, VLLM_STARTUP_FAILURES),
                "readinessProbe": _probe("/health", "vllm", 5, 2),
                "resources": plan.resources["vllm"],
                "securityContext": CONTAINER_SECURITY,
                # NCCL and PyTorch's shared-memory tensors need more than the runtime's 64 MiB /dev/shm
                "volumeMounts": [*mounts, {"name": "dshm", "mountPath": "/dev/shm"}],
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
            f"{store.base_url}/{plan.artifact.sha256}.tar.gz",
            "--sha256",
            plan.artifact.sha256,
            "--dest",
            model_dir,
            "--timeout-s",
            str(store.fetch_timeout_s),
        ],
        "env": fetch_env(stack),
        "resources": plan.resources["fetch"],
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }
    # Room for the unpacked model plus the bundle being unpacked beside it.
    models_mib = max(1, math.ceil(2 * plan.artifact.size_bytes / 2**20))
    spec: dict[str, Any] = {
        "priorityClassName": priority_class_name(plan.sla_class),
        "serviceAccountName": stack.workload_identity.service_account,
        "automountServiceAccountToken": False,
        "securityContext": POD_SECURITY,
        "terminationGracePeriodSeconds": math.ceil(params.serving.shutdown_grace_s) + TERMINATION_SLACK_S,
        "initContainers": [fetch],
        "containers": containers,
        "volumes": [
            {"name": "models", "emptyDir": {"sizeLimit": f"{models_mib}Mi"}},
            {"name": "tmp", "emptyDir": {}},
            {
                "name": "config",
                "projected": {
                    "sources": [
                        {
                            "secret": {
                                "name": f"{name}-params",
                                "items": [{"key": "params.yaml", "path": "params.yaml"}],
                            }
                        },
                        {
                            "configMap": {
                                "name": f"{name}-config",
                                "items": [{"key": "manifest.json", "path": "manifest.json"}],
                            }
                        },
                    ]
                },
            },
        ],
        "topologySpreadConstraints": [
            {
                "topologyKey": key,
                "maxSkew": 1,
                "whenUnsatisfiable": stack.topology_spread,
                "labelSelector": {"matchLabels": server_selector(name)},
                "matchLabelKeys": ["pod-template-hash"],  # spread each rollout's ReplicaSet on its own
            }
            for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
        ],
    }
    if plan.deployment.engine == "vllm":
        spec["volumes"].append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": stack.vllm_shm_size}})
    if plan.uses_gpu:
        if stack.gpu_node_selector:
            spec["nodeSelector"] = dict(stack.gpu_node_selector)
        if stack.gpu_tolerations:
            spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in stack.gpu_tolerations]
    return spec


def hpa_metrics(plan: ServingPlan) -> list[dict[str, Any]]:
    """Pods metrics, each with the manifest's per-pod queue target; the HPA follows the largest demand.
    vLLM deployments add the requests waiting inside vLLM (the gateway re-exports vLLM's
    vllm:num_requests_waiting), since the gateway forwards to vLLM and its own queue then stays short."""
    names = [plan.deployment.autoscaling.metric]
    if plan.deployment.engine == "vllm":
        names.append(VLLM_WAITING[1])
    return [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": metric},
                "target": {"type": "AverageValue", "averageValue": str(plan.queue_target)},
            },
        }
        for metric in names
    ]


def service_docs(
    plan: ServingPlan, params: Params, manifest: Manifest, stack: StackConfig, stack_name: str
) -> list[dict[str, Any]]:
    """Secret, ConfigMap, Deployment, Service, PodDisruptionBudget, HPA and (unless ingress mode none) the
    route, as manifests."""
    name, ns = plan.deployment.name, plan.namespace
    labels = _labels(plan)
    data = config_data(params, manifest, plan)
    config_sha = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    provenance = {ARTIFACT_SHA256: plan.artifact.sha256, VARIANT: plan.variant.name, STACK: stack_name}
    selector = {"matchLabels": server_selector(name)}
    auto = plan.deployment.autoscaling
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-params", "namespace": ns, "labels": labels},
            "type": "Opaque",
            "stringData": {"params.yaml": data["params.yaml"]},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-config", "namespace": ns, "labels": labels},
            "data": {"manifest.json": data["manifest.json"]},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": provenance},
            "spec": {
                "selector": selector,
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": plan.max_surge, "maxUnavailable": plan.max_unavailable},
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
        {
            # One pod at a time for every deployment: a drain never takes all replicas at once; with one
            # replica the drain still proceeds (a stack that cannot accept that sets highAvailability).
            # Crash-looping pods may always be evicted, so they never block a node upgrade.
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"maxUnavailable": 1, "selector": selector, "unhealthyPodEvictionPolicy": "AlwaysAllow"},
        },
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": plan.min_replicas,
                "maxReplicas": plan.max_replicas,
                "metrics": hpa_metrics(plan),
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
        },
    ]
    route = route_doc(plan, stack, labels)
    if route is not None:
        docs.append(route)
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
        self.host = stack.ingress.host(plan.deployment.name) if stack.ingress.mode != "none" else None
        child = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=depends_on)
        wait = f"{await_seconds(plan, stack)}s"
        rollout = pulumi.ResourceOptions.merge(
            child, pulumi.ResourceOptions(custom_timeouts=pulumi.CustomTimeouts(create=wait, update=wait))
        )
        self.docs = service_docs(plan, params, manifest, stack, pulumi.get_stack())
        self.resources = {
            doc["kind"]: declare(doc, rollout if doc["kind"] == "Deployment" else child) for doc in self.docs
        }
        self.register_outputs({"namespace": plan.namespace, "deployment": plan.deployment.name})
