"""The offline plan of each stack: schema-valid, policy-clean, and every value traced to params/manifest."""

from __future__ import annotations

from typing import Any

import pytest

from infopt.manifest import Manifest
from infopt.params import parse_params
from infopt.quantity import parse_quantity
from infra.metrics import QUEUE_METRIC
from infra.plan import PlanResult
from tests.infra.planning import STACKS, params_with, run_plan, stack_config


def by_key(result: PlanResult) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {resource.key: resource.manifest for resource in result.resources}


@pytest.fixture(scope="module", params=STACKS)
def stack_plan(request, raw_params, manifest) -> tuple[str, PlanResult]:
    return request.param, run_plan(parse_params(raw_params), manifest, request.param)


def test_every_object_is_schema_valid_and_policy_clean(stack_plan) -> None:
    stack, result = stack_plan
    assert result.schema_errors == []
    assert result.violations == []
    # Only the prometheus-operator CRD has no bundled schema; all 41 built-in objects were validated strictly.
    assert {key.split("/")[0] for key in result.schema_skipped} == {"ServiceMonitor"}
    assert len(result.resources) - len(result.schema_skipped) == 41
    assert result.kubernetes_version == stack_config(stack).kubernetes_version


def test_quota_per_tenant_comes_from_params(stack_plan, raw_params) -> None:
    _, result = stack_plan
    objects = by_key(result)
    for tenant in parse_params(raw_params).tenants:
        hard = objects[("ResourceQuota", f"inference-{tenant.name}", "quota")]["spec"]["hard"]
        assert parse_quantity(hard["requests.cpu"]) == parse_quantity(tenant.quota.cpu)
        assert parse_quantity(hard["limits.memory"]) == parse_quantity(tenant.quota.memory)
        assert hard["requests.nvidia.com/gpu"] == str(tenant.quota.gpu)
        assert hard["pods"] == str(tenant.quota.pods)
        namespace = objects[("Namespace", "", f"inference-{tenant.name}")]["metadata"]["labels"]
        assert namespace["infopt.dev/cost-center"] == tenant.cost_center
        assert namespace["infopt.dev/sla-class"] == tenant.sla_class
        binding = objects[("RoleBinding", f"inference-{tenant.name}", "tenant-viewer")]
        assert binding["subjects"][0]["name"] == (tenant.group or f"tenant-{tenant.name}")


def test_priority_class_follows_the_tenants_sla_class(stack_plan, raw_params) -> None:
    _, result = stack_plan
    objects = by_key(result)
    params = parse_params(raw_params)
    for name, sla in params.sla_classes.items():
        klass = objects[("PriorityClass", "", f"infopt-{name}")]
        assert klass["value"] == sla.k8s_priority_value
        assert klass["preemptionPolicy"] == ("PreemptLowerPriority" if sla.preempts else "Never")
    premium = objects[("Deployment", "inference-acme", "textcls-premium")]["spec"]["template"]["spec"]
    assert premium["priorityClassName"] == "infopt-premium"  # acme is premium
    # Shared by globex (standard) and initech (batch): the highest class wins.
    shared = objects[("Deployment", "inference-shared-textcls-shared", "textcls-shared")]["spec"]["template"]["spec"]
    assert shared["priorityClassName"] == "infopt-standard"


def test_hpa_scales_on_queue_length_with_the_manifest_knee(stack_plan, raw_params, manifest: Manifest) -> None:
    stack, result = stack_plan
    objects = by_key(result)
    params = parse_params(raw_params)
    bounds = stack_config(stack).replica_overrides
    for deployment, namespace, sla_class in (
        ("textcls-premium", "inference-acme", "premium"),
        ("textcls-shared", "inference-shared-textcls-shared", "standard"),
    ):
        spec = objects[("HorizontalPodAutoscaler", namespace, deployment)]["spec"]
        metric = spec["metrics"][0]["pods"]
        assert metric["metric"]["name"] == QUEUE_METRIC == "request_queue_length"
        knee = manifest.variant(params.deployment(deployment).variant).sla_knees[sla_class]
        assert metric["target"] == {"type": "AverageValue", "averageValue": str(knee.queue_target)}
        replicas = params.deployment(deployment).replicas
        clamp = bounds.get(deployment)
        expected = (
            (replicas.min, replicas.max) if clamp is None else (clamp.clamp(replicas.min), clamp.clamp(replicas.max))
        )
        assert (spec["minReplicas"], spec["maxReplicas"]) == expected
        auto = params.deployment(deployment).autoscaling
        assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == auto.scale_down_stabilization_s
        assert spec["behavior"]["scaleUp"]["policies"][0]["value"] == auto.scale_up_pods_per_min


def test_init_container_fetches_the_manifest_artifact(stack_plan, manifest: Manifest) -> None:
    stack, result = stack_plan
    pod = by_key(result)[("Deployment", "inference-acme", "textcls-premium")]["spec"]["template"]["spec"]
    sha = manifest.variant("int8-dynamic").artifact("onnxruntime").sha256
    fetch = pod["initContainers"][0]
    assert fetch["args"] == [
        "artifact",
        "fetch",
        "--url",
        f"{stack_config(stack).artifact_base_url}/{sha}.tar.gz",
        "--sha256",
        sha,
        "--dest",
        "/models/int8-dynamic",
    ]
    gateway = pod["containers"][0]
    assert gateway["args"][gateway["args"].index("--model-dir") + 1] == "/models/int8-dynamic"
    assert gateway["securityContext"]["runAsUser"] == 10001
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


def gpu_edit(raw: dict[str, Any]) -> None:
    premium = raw["deployments"][0]
    premium["resources"]["gpu"] = 1
    premium["replicas"] = {"min": 1, "max": 1}  # acme's quota holds one GPU, and GPU pods roll without surge


def test_gpu_deployment_gets_gpu_limits_node_selector_and_tolerations(raw_params, manifest: Manifest) -> None:
    result = run_plan(params_with(raw_params, gpu_edit), manifest, "prod")
    assert result.ok, result.violations
    spec = by_key(result)[("Deployment", "inference-acme", "textcls-premium")]["spec"]
    pod = spec["template"]["spec"]
    config = stack_config("prod")
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == config.gpu_node_selector
    assert pod["tolerations"] == [t.model_dump(by_alias=True, exclude_none=True) for t in config.gpu_tolerations]
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    shared = by_key(result)[("Deployment", "inference-shared-textcls-shared", "textcls-shared")]["spec"]
    assert "tolerations" not in shared["template"]["spec"]


def test_vllm_deployment_runs_the_vllm_sidecar(raw_params, manifest: Manifest) -> None:
    def edit(raw: dict[str, Any]) -> None:
        gpu_edit(raw)
        raw["deployments"][0]["engine"] = "vllm"

    result = run_plan(params_with(raw_params, edit), manifest, "prod")
    assert result.ok, result.violations
    objects = by_key(result)
    pod = objects[("Deployment", "inference-acme", "textcls-premium")]["spec"]["template"]["spec"]
    gateway, vllm = pod["containers"]
    assert gateway["args"][-2:] == ["--vllm-url", "http://127.0.0.1:8001"]
    assert gateway["image"].startswith("ghcr.io/infopt/gateway-vllm@sha256:")
    # the gateway asks vLLM for the variant's name (its --vllm-model default), so vLLM must serve it under that name
    assert vllm["args"] == [
        "--model",
        "/models/int8-dynamic",
        "--served-model-name",
        "int8-dynamic",
        "--port",
        "8001",
        "--scheduling-policy",
        "priority",
        "--enable-prefix-caching",
    ]
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "1"
    sha = manifest.variant("int8-dynamic").artifact("torch").sha256  # vLLM loads the Hugging Face export
    assert pod["initContainers"][0]["args"][5] == sha
    rules = objects[("ConfigMap", "monitoring", "infopt-prometheus-adapter")]["data"]["config.yaml"]
    assert "as: vllm_num_requests_waiting" in rules and "infopt_vllm_num_requests_waiting{" in rules


def changed(before: PlanResult, after: PlanResult) -> set[tuple[str, str, str]]:
    old, new = by_key(before), by_key(after)
    return {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}


def test_quota_change_touches_only_that_tenants_objects(raw_params, manifest: Manifest) -> None:
    baseline = run_plan(parse_params(raw_params), manifest, "prod")

    def edit(raw: dict[str, Any]) -> None:
        raw["tenants"][0]["quota"]["cpu"] = "10"  # acme

    after = run_plan(params_with(raw_params, edit), manifest, "prod")
    assert by_key(after)[("ResourceQuota", "inference-acme", "quota")]["spec"]["hard"]["requests.cpu"] == "10"
    # acme's quota, and acme's deployment whose scoped params (ConfigMap) changed, which rolls its pods.
    assert changed(baseline, after) == {
        ("ResourceQuota", "inference-acme", "quota"),
        ("ConfigMap", "inference-acme", "textcls-premium-config"),
        ("Deployment", "inference-acme", "textcls-premium"),
    }


def test_variant_change_touches_only_that_deployments_objects(raw_params, manifest: Manifest) -> None:
    baseline = run_plan(parse_params(raw_params), manifest, "prod")

    def edit(raw: dict[str, Any]) -> None:
        raw["deployments"][0]["variant"] = "pruned-l1-40"

    after = run_plan(params_with(raw_params, edit), manifest, "prod")
    assert changed(baseline, after) == {
        (kind, "inference-acme", name)
        for kind, name in (
            ("ConfigMap", "textcls-premium-config"),
            ("Deployment", "textcls-premium"),
            ("Service", "textcls-premium"),
            ("PodDisruptionBudget", "textcls-premium"),
            ("HorizontalPodAutoscaler", "textcls-premium"),
        )
    }
    hpa = by_key(after)[("HorizontalPodAutoscaler", "inference-acme", "textcls-premium")]["spec"]
    assert hpa["metrics"][0]["pods"]["target"]["averageValue"] == str(
        manifest.variant("pruned-l1-40").sla_knees["premium"].queue_target
    )
    deployment = by_key(after)[("Deployment", "inference-acme", "textcls-premium")]
    assert (
        deployment["metadata"]["annotations"]["infopt.dev/artifact-sha256"]
        == manifest.variant("pruned-l1-40").artifact("onnxruntime").sha256
    )


def test_variant_over_the_accuracy_budget_is_a_policy_violation(raw_params, manifest: Manifest) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["deployments"][0]["variant"] = "pruned-heads-25"

    result = run_plan(params_with(raw_params, edit), manifest, "prod")
    assert not result.ok
    assert [(v["policy"], v["resource"].rsplit("::", 1)[-1]) for v in result.violations] == [
        ("artifact-within-accuracy-budget", "deployment-inference-acme-textcls-premium")
    ]
    assert "pruned-heads-25" in result.violations[0]["message"]
