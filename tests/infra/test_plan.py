"""The offline plan of each stack: schema-valid, policy-clean, and every value traced to params/manifest."""

from __future__ import annotations

from typing import Any

import pytest

from infopt.deployments import resolve_deployment
from infopt.manifest import Manifest
from infopt.params import parse_params
from infopt.quantity import parse_quantity
from infra.metrics import QUEUE_METRIC
from infra.plan import PlanResult
from tests.infra.planning import STACKS, params_with, run_plan, stack_config


def by_key(result: PlanResult) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {resource.key: resource.manifest for resource in result.resources}


@pytest.fixture(scope="module", params=STACKS)
def stack_plan(request, raw_params, manifest, analyzer) -> tuple[str, PlanResult]:
    return request.param, run_plan(parse_params(raw_params), manifest, request.param, analyzer)


def test_every_object_is_schema_valid_and_policy_clean(stack_plan) -> None:
    stack, result = stack_plan
    assert result.schema_errors == []
    assert result.violations == []
    # No bundled schema: the prometheus-operator CRD, the adapter's Helm release and (staging, Gateway API)
    # the HTTPRoutes; every built-in object was validated strictly.
    skipped = {"ServiceMonitor", "HelmRelease"} | ({"HTTPRoute"} if stack == "staging" else set())
    assert {key.split("/")[0] for key in result.schema_skipped} == skipped
    assert len(result.resources) == 52
    assert len(result.resources) - len(result.schema_skipped) == (47 if stack == "staging" else 49)
    assert result.kubernetes_version == stack_config(stack).kubernetes_version
    assert len(result.policies) == 13 and "artifact-is-deployable" in result.policies


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
        plan = resolve_deployment(params, manifest, deployment).sla
        assert plan is not None and plan.sla_class == sla_class and plan.threads == 1  # the pod's 1 CPU
        assert metric["target"] == {"type": "AverageValue", "averageValue": str(plan.queue_target)}
        replicas = params.deployment(deployment).replicas
        override = bounds.get(deployment)
        expected = (
            override.min if override and override.min else replicas.min,
            override.max if override and override.max else replicas.max,
        )
        assert (spec["minReplicas"], spec["maxReplicas"]) == expected
        assert expected[0] < expected[1], f"{stack}/{deployment}: the HPA must be able to scale"
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
        f"{stack_config(stack).artifact_store.base_url}/{sha}.tar.gz",
        "--sha256",
        sha,
        "--dest",
        "/models/int8-dynamic",
        "--timeout-s",
        "300",
    ]
    gateway = pod["containers"][0]
    assert gateway["args"][gateway["args"].index("--model-dir") + 1] == "/models/int8-dynamic"
    assert gateway["securityContext"]["runAsUser"] == 10001
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


def gpu_edit(raw: dict[str, Any]) -> None:
    premium = raw["deployments"][0]
    premium["resources"]["gpu"] = 1
    premium["replicas"] = {"min": 2, "max": 3}
    raw["tenants"][0]["quota"]["gpu"] = 4  # max 3 + one surge pod: a rollout starts the new pod first


def test_gpu_deployment_gets_gpu_limits_node_selector_and_tolerations(
    raw_params, cuda_manifest: Manifest, analyzer
) -> None:
    result = run_plan(params_with(raw_params, gpu_edit), cuda_manifest, "prod", analyzer)
    assert result.ok, result.violations
    spec = by_key(result)[("Deployment", "inference-acme", "textcls-premium")]["spec"]
    pod = spec["template"]["spec"]
    config = stack_config("prod")
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == config.gpu_node_selector
    assert pod["tolerations"] == [t.model_dump(by_alias=True, exclude_none=True) for t in config.gpu_tolerations]
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    shared = by_key(result)[("Deployment", "inference-shared-textcls-shared", "textcls-shared")]["spec"]
    assert "tolerations" not in shared["template"]["spec"]


def test_vllm_deployment_runs_the_vllm_sidecar(raw_params, cuda_manifest: Manifest, analyzer) -> None:
    def edit(raw: dict[str, Any]) -> None:
        gpu_edit(raw)
        raw["deployments"][0]["engine"] = "vllm"
        raw["deployments"][0]["autoscaling"] = {"queue_target": 6}  # LLM requests: an explicit per-pod target
        raw["deployments"][0]["resources"]["memory"] = "8Gi"  # above the stack's 2Gi /dev/shm
        raw["tenants"][0]["quota"]["memory"] = "40Gi"

    result = run_plan(params_with(raw_params, edit), cuda_manifest, "prod", analyzer)
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
    sha = cuda_manifest.variant("int8-dynamic").artifact("torch").sha256  # vLLM loads the Hugging Face export
    assert pod["initContainers"][0]["args"][5] == sha
    # /dev/shm: memory-backed and bounded
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in pod["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in vllm["volumeMounts"]
    # the HPA also follows the requests waiting inside vLLM, with the deployment's per-pod target
    hpa = objects[("HorizontalPodAutoscaler", "inference-acme", "textcls-premium")]["spec"]["metrics"]
    target = "6"
    assert [(m["pods"]["metric"]["name"], m["pods"]["target"]["averageValue"]) for m in hpa] == [
        ("request_queue_length", target),
        ("vllm_num_requests_waiting", target),
    ]
    rules = objects[("HelmRelease", "monitoring", "prometheus-adapter")]["values"]["rules"]["custom"]
    assert {"matches": "^infopt_vllm_num_requests_waiting$", "as": "vllm_num_requests_waiting"} in [
        rule["name"] for rule in rules
    ]
    # Pulumi waits image pull 600 + fetch 300 + vLLM's startup probe 600 + slack 60 = 1560 s
    deployment = next(r for r in result.resources if r.key == ("Deployment", "inference-acme", "textcls-premium"))
    assert deployment.custom_timeouts_s[:2] == (1560.0, 1560.0)


def changed(before: PlanResult, after: PlanResult) -> set[tuple[str, str, str]]:
    old, new = by_key(before), by_key(after)
    return {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}


def test_quota_change_touches_only_that_tenants_objects(raw_params, manifest: Manifest, analyzer) -> None:
    baseline = run_plan(parse_params(raw_params), manifest, "prod", analyzer)

    def edit(raw: dict[str, Any]) -> None:
        raw["tenants"][0]["quota"]["cpu"] = "10"  # acme

    after = run_plan(params_with(raw_params, edit), manifest, "prod", analyzer)
    assert by_key(after)[("ResourceQuota", "inference-acme", "quota")]["spec"]["hard"]["requests.cpu"] == "10"
    # acme's quota, and acme's deployment whose scoped params (Secret) changed, which rolls its pods.
    assert changed(baseline, after) == {
        ("ResourceQuota", "inference-acme", "quota"),
        ("Secret", "inference-acme", "textcls-premium-params"),
        ("Deployment", "inference-acme", "textcls-premium"),
    }


def test_variant_change_touches_only_that_deployments_objects(raw_params, manifest: Manifest, analyzer) -> None:
    baseline = run_plan(parse_params(raw_params), manifest, "prod", analyzer)

    def edit(raw: dict[str, Any]) -> None:
        raw["deployments"][0]["variant"] = "pruned-l1-40"

    after = run_plan(params_with(raw_params, edit), manifest, "prod", analyzer)
    assert changed(baseline, after) == {
        (kind, "inference-acme", name)
        for kind, name in (
            ("Secret", "textcls-premium-params"),
            ("ConfigMap", "textcls-premium-config"),
            ("Ingress", "textcls-premium"),
            ("Deployment", "textcls-premium"),
            ("Service", "textcls-premium"),
            ("PodDisruptionBudget", "textcls-premium"),
            ("HorizontalPodAutoscaler", "textcls-premium"),
        )
    }
    hpa = by_key(after)[("HorizontalPodAutoscaler", "inference-acme", "textcls-premium")]["spec"]
    plan = resolve_deployment(params_with(raw_params, edit), manifest, "textcls-premium").sla
    assert plan is not None and hpa["metrics"][0]["pods"]["target"]["averageValue"] == str(plan.queue_target)
    deployment = by_key(after)[("Deployment", "inference-acme", "textcls-premium")]
    assert (
        deployment["metadata"]["annotations"]["infopt.dev/artifact-sha256"]
        == manifest.variant("pruned-l1-40").artifact("onnxruntime").sha256
    )


def test_variant_over_the_accuracy_budget_is_a_policy_violation(raw_params, manifest: Manifest, analyzer) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["deployments"][0]["variant"] = "pruned-heads-25"

    result = run_plan(params_with(raw_params, edit), manifest, "prod", analyzer)
    assert not result.ok
    assert [(v["policy"], v["resource"].rsplit("::", 1)[-1], v["enforcement"]) for v in result.violations] == [
        ("artifact-is-deployable", "deployment-inference-acme-textcls-premium", "mandatory")
    ]
    sha = manifest.variant("pruned-heads-25").artifact("onnxruntime").sha256
    assert result.violations[0]["message"] == (
        f"deployment-inference-acme-textcls-premium: container 'fetch-artifact' fetches artifact {sha}: "
        "variant 'pruned-heads-25' is not within the accuracy budget: paired loss vs fp32 +0.0169, upper bound +0.0224 (95%), budget 0.01"
    )


SERVING = (("textcls-premium", "inference-acme"), ("textcls-shared", "inference-shared-textcls-shared"))


def test_every_deployment_has_a_disruption_budget_and_spreads(stack_plan) -> None:
    _, result = stack_plan
    objects = by_key(result)
    for name, ns in SERVING:
        budget = objects[("PodDisruptionBudget", ns, name)]["spec"]
        assert budget == {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "infopt"}},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        }
        spread = objects[("Deployment", ns, name)]["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert [(c["topologyKey"], c["maxSkew"], c["whenUnsatisfiable"]) for c in spread] == [
            ("topology.kubernetes.io/zone", 1, "ScheduleAnyway"),
            ("kubernetes.io/hostname", 1, "ScheduleAnyway"),
        ]


def test_api_key_hashes_are_in_a_secret_the_viewer_cannot_read(stack_plan, raw_params) -> None:
    _, result = stack_plan
    objects = by_key(result)
    for name, ns in SERVING:
        secret = objects[("Secret", ns, f"{name}-params")]["stringData"]["params.yaml"]
        config = objects[("ConfigMap", ns, f"{name}-config")]["data"]
        assert "api_key_sha256" in secret and list(config) == ["manifest.json"]
        rules = objects[("Role", ns, "tenant-viewer")]["rules"]
        assert not any("secrets" in rule["resources"] for rule in rules)
    shared_core = objects[("Role", "inference-shared-textcls-shared", "tenant-viewer")]["rules"][0]["resources"]
    assert "pods/log" not in shared_core  # logs of a shared gateway carry every tenant's requests
    assert "pods/log" in objects[("Role", "inference-acme", "tenant-viewer")]["rules"][0]["resources"]


def test_dns_egress_reaches_cluster_dns_and_node_local_cache(stack_plan) -> None:
    _, result = stack_plan
    egress = by_key(result)[("NetworkPolicy", "inference-acme", "allow-serving")]["spec"]["egress"]
    assert egress[0] == {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            },
            {"ipBlock": {"cidr": "169.254.20.10/32"}},
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }


def test_artifact_egress_and_workload_identity_follow_the_store(stack_plan) -> None:
    stack, result = stack_plan
    objects = by_key(result)
    egress = objects[("NetworkPolicy", "inference-acme", "allow-serving")]["spec"]["egress"][1:]
    account = objects[("ServiceAccount", "inference-acme", "infopt-model-server")]
    pod = objects[("Deployment", "inference-acme", "textcls-premium")]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "infopt-model-server" and account["automountServiceAccountToken"] is False
    fetch_env = {e["name"]: e["value"] for e in pod["initContainers"][0]["env"]}
    if stack == "dev":  # the in-cluster store's pods, after DNAT: no Service CIDR
        assert egress == [
            {
                "to": [
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "infopt-system"}},
                        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "artifact-store"}},
                    }
                ],
                "ports": [{"protocol": "TCP", "port": 8080}],
            }
        ]
        assert "annotations" not in account["metadata"]
    elif stack == "staging":  # GKE: GCS over Private Google Access + the metadata server
        assert [(e["to"][0]["ipBlock"]["cidr"], e["ports"][0]["port"]) for e in egress] == [
            ("199.36.153.8/30", 443),
            ("169.254.169.254/32", 80),
            ("169.254.169.252/32", 988),
        ]
        assert account["metadata"]["annotations"] == {
            "iam.gke.io/gcp-service-account": "infopt-artifacts@infopt-staging.iam.gserviceaccount.com"
        }
    else:  # EKS: S3 and STS over public HTTPS, private ranges excluded
        assert egress[0]["to"][0]["ipBlock"]["cidr"] == "0.0.0.0/0" and egress[0]["ports"] == [
            {"protocol": "TCP", "port": 443}
        ]
        assert account["metadata"]["annotations"] == {
            "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/infopt-artifact-reader"
        }
        assert fetch_env["AWS_REGION"] == "eu-west-1"
    assert fetch_env["HOME"] == "/tmp"


def test_traffic_from_outside_reaches_each_gateway(stack_plan) -> None:
    stack, result = stack_plan
    objects = by_key(result)
    config = stack_config(stack).ingress
    for name, ns in SERVING:
        host = f"{name}.{config.domain}"
        if stack == "staging":
            route = objects[("HTTPRoute", ns, name)]["spec"]
            assert route["hostnames"] == [host]
            assert route["parentRefs"] == [
                {"name": "external-https", "namespace": "gke-gateway", "sectionName": "https"}
            ]
            assert route["rules"][0]["backendRefs"] == [{"name": name, "port": 8000}]
        else:
            ingress = objects[("Ingress", ns, name)]
            rule = ingress["spec"]["rules"][0]
            assert rule["host"] == host and ingress["spec"]["ingressClassName"] == "nginx"
            assert rule["http"]["paths"][0]["backend"]["service"] == {"name": name, "port": {"number": 8000}}
            assert ("tls" in ingress["spec"]) is config.tls
    allowed = objects[("NetworkPolicy", "inference-acme", "allow-serving")]["spec"]["ingress"][0]["from"]
    if stack == "staging":  # Google's load balancers reach the pods from these ranges
        assert [peer["ipBlock"]["cidr"] for peer in allowed[:3]] == ["10.129.0.0/23", "35.191.0.0/16", "130.211.0.0/22"]
    else:
        assert allowed[0] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}


def test_adapter_rules_live_in_its_helm_release_and_name_no_namespace(stack_plan) -> None:
    _, result = stack_plan
    objects = by_key(result)
    release = objects[("HelmRelease", "monitoring", "prometheus-adapter")]
    assert (release["chart"], release["version"]) == ("prometheus-adapter", "5.3.0")
    assert release["repositoryOpts"] == {"repo": "https://prometheus-community.github.io/helm-charts"}
    values = release["values"]
    assert values["metricsRelistInterval"] == "1m" and values["rules"]["default"] is False
    queries = [rule["seriesQuery"] for rule in values["rules"]["custom"]]
    assert queries == [
        'request_queue_length{namespace!="",pod!="",app_kubernetes_io_part_of="infopt"}',
        'infopt_vllm_num_requests_waiting{namespace!="",pod!="",app_kubernetes_io_part_of="infopt"}',
    ]
    monitor = objects[("ServiceMonitor", "inference-acme", "infopt-model-servers")]["spec"]
    assert monitor["targetLabels"] == ["app.kubernetes.io/part-of"]  # becomes app_kubernetes_io_part_of


def test_a_new_serving_namespace_needs_no_adapter_change(raw_params, manifest: Manifest, analyzer) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["deployments"].append(
            {
                "name": "textcls-batch",
                "variant": "int8-dynamic",
                "tenants": ["initech"],
                "replicas": {"min": 1, "max": 2},
            }
        )

    config = stack_config("staging").model_copy(
        update={"deployments": ["textcls-premium", "textcls-shared", "textcls-batch"]}
    )
    before = run_plan(parse_params(raw_params), manifest, "staging", analyzer)
    after = run_plan(params_with(raw_params, edit), manifest, "staging", analyzer, config)
    assert after.ok, after.violations
    assert ("ServiceMonitor", "inference-initech", "infopt-model-servers") in by_key(after)
    release = ("HelmRelease", "monitoring", "prometheus-adapter")
    assert by_key(after)[release] == by_key(before)[release]


def test_hpa_target_follows_the_deployments_own_batch_cap(raw_params, manifest: Manifest, analyzer) -> None:
    """max_batch_size in params -> the SLA plan -> the HPA target: a smaller cap holds at a smaller batch, whose
    lower p99 leaves room for a longer queue per pod (fixture sweep of int8-dynamic, onnxruntime, 1 thread)."""

    def cap(size: int):
        def edit(raw: dict[str, Any]) -> None:
            raw["deployments"][0]["batching"]["max_batch_size"] = size
            raw["deployments"][0]["batching"]["preferred_batch_sizes"] = []

        return edit

    targets = {}
    for size in (8, 2):
        result = run_plan(params_with(raw_params, cap(size)), manifest, "prod", analyzer)
        hpa = by_key(result)[("HorizontalPodAutoscaler", "inference-acme", "textcls-premium")]["spec"]
        targets[size] = int(hpa["metrics"][0]["pods"]["target"]["averageValue"])
    # worst-round p99 in the fixture: batch 8 = 1.6 * 8000 / (930 * 2.65) = 5.194 ms, batch 2 = 1.6 * 2000 / (930 * 1.55)
    # = 2.220 ms; SLA 50 ms, wait 2 ms: floor((50 - 2 - 5.193) / 5.193 * 8) = 65; floor((48 - 2.220) / 2.220 * 2) = 41
    assert targets == {8: 65, 2: 41}
