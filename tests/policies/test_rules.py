"""Each policy on a compliant and a violating resource, called directly as the analyzer would call it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)
from pulumi_policy.proxy import unknown_checking_proxy

from infopt.manifest import load_manifest
from policies.rules import ALL_POLICIES

FIXTURE_MANIFEST = Path(__file__).resolve().parents[1] / "fixtures" / "manifest.json"
SHA = "a" * 64
TYPES = {
    "Deployment": "kubernetes:apps/v1:Deployment",
    "Namespace": "kubernetes:core/v1:Namespace",
    "ResourceQuota": "kubernetes:core/v1:ResourceQuota",
    "LimitRange": "kubernetes:core/v1:LimitRange",
    "NetworkPolicy": "kubernetes:networking.k8s.io/v1:NetworkPolicy",
    "PriorityClass": "kubernetes:scheduling.k8s.io/v1:PriorityClass",
    "HorizontalPodAutoscaler": "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
}


def policy(name: str):
    return next(p for p in ALL_POLICIES if p.name == name)


def options() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def check_resource(name: str, doc: dict[str, Any], config: dict[str, Any] | None = None) -> list[str]:
    violations: list[str] = []
    args = ResourceValidationArgs(
        TYPES[doc["kind"]],
        unknown_checking_proxy(doc),
        f"urn::{doc['metadata']['name']}",
        doc["metadata"]["name"],
        options(),
        None,
        config,
    )
    policy(name).validate(args, lambda message, urn=None: violations.append(message))
    return violations


def check_stack(name: str, docs: list[dict[str, Any]]) -> list[str]:
    violations: list[str] = []
    resources = [
        PolicyResource(
            TYPES[d["kind"]],
            unknown_checking_proxy(d),
            f"urn::{d['metadata']['name']}",
            d["metadata"]["name"],
            options(),
            None,
            None,
            [],
            {},
        )
        for d in docs
    ]
    policy(name).validate(StackValidationArgs(resources), lambda message, urn=None: violations.append(message))
    return violations


def deployment(**overrides: Any) -> dict[str, Any]:
    container = {
        "name": "gateway",
        "image": f"ghcr.io/infopt/gateway@sha256:{SHA}",
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "allowPrivilegeEscalation": False},
    }
    doc = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "svc", "namespace": "inference-acme", "annotations": {"infopt.dev/stack": "prod"}},
        "spec": {
            "strategy": {"rollingUpdate": {"maxSurge": 1}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/component": "model-server"}},
                "spec": {"priorityClassName": "infopt-premium", "containers": [container]},
            },
        },
    }
    for path, value in overrides.items():
        target = doc
        *parents, leaf = path.split(".")
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[leaf] = value
    return doc


def pod(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def test_containers_have_requests_and_limits() -> None:
    assert check_resource("containers-have-requests-and-limits", deployment()) == []
    bad = deployment()
    del pod(bad)["containers"][0]["resources"]["limits"]["memory"]
    assert check_resource("containers-have-requests-and-limits", bad) == [
        "svc: container 'gateway' has no limits for ['memory']"
    ]


def test_containers_run_as_non_root() -> None:
    assert check_resource("containers-run-as-non-root", deployment()) == []
    bad = deployment()
    pod(bad)["containers"][0]["securityContext"] = {"runAsUser": 0}
    assert check_resource("containers-run-as-non-root", bad) == [
        "svc: container 'gateway' does not set runAsNonRoot: true",
        "svc: container 'gateway' runs as user 0",
    ]


def test_no_privileged_or_host_access() -> None:
    assert check_resource("no-privileged-or-host-access", deployment()) == []
    bad = deployment()
    pod(bad)["hostNetwork"] = True
    pod(bad)["volumes"] = [{"name": "host", "hostPath": {"path": "/"}}]
    pod(bad)["containers"][0]["securityContext"]["privileged"] = True
    assert check_resource("no-privileged-or-host-access", bad) == [
        "svc: pod sets hostNetwork: true",
        "svc: volume 'host' is a hostPath",
        "svc: container 'gateway' is privileged",
    ]


def test_images_pinned_by_digest_in_prod_only() -> None:
    tagged = deployment()
    pod(tagged)["containers"][0]["image"] = "ghcr.io/infopt/gateway:main"
    assert check_resource("images-pinned-by-digest", deployment()) == []
    assert check_resource("images-pinned-by-digest", tagged) == [
        "svc: container 'gateway' image 'ghcr.io/infopt/gateway:main' is not pinned by digest (@sha256:...)"
    ]
    dev = copy.deepcopy(tagged)
    dev["metadata"]["annotations"]["infopt.dev/stack"] = "dev"
    assert check_resource("images-pinned-by-digest", dev) == []
    assert len(check_resource("images-pinned-by-digest", dev, {"requireImageDigests": True})) == 1


def hpa(low: int, high: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "svc", "namespace": "inference-acme"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "svc"},
            "minReplicas": low,
            "maxReplicas": high,
        },
    }


def test_hpa_replica_bounds() -> None:
    assert check_resource("hpa-replica-bounds", hpa(2, 6)) == []
    assert check_resource("hpa-replica-bounds", hpa(5, 3)) == ["svc: minReplicas 5 > maxReplicas 3"]


def test_artifact_within_accuracy_budget() -> None:
    manifest = load_manifest(FIXTURE_MANIFEST)
    config = {"manifestPath": str(FIXTURE_MANIFEST)}

    def annotated(variant: str) -> dict[str, Any]:
        sha = manifest.variant(variant).artifact("onnxruntime").sha256
        return deployment(
            **{"metadata.annotations": {"infopt.dev/variant": variant, "infopt.dev/artifact-sha256": sha}}
        )

    assert check_resource("artifact-within-accuracy-budget", annotated("int8-dynamic"), config) == []
    [message] = check_resource("artifact-within-accuracy-budget", annotated("pruned-heads-25"), config)
    assert "variant 'pruned-heads-25' is not within the accuracy budget (loss 0.0354, budget 0.02)" in message
    wrong = annotated("int8-dynamic")
    wrong["metadata"]["annotations"]["infopt.dev/artifact-sha256"] = SHA
    assert check_resource("artifact-within-accuracy-budget", wrong, config) == [
        f"svc: artifact {SHA} is not an artifact of variant 'int8-dynamic' in {FIXTURE_MANIFEST}"
    ]


def test_artifact_policy_reads_the_manifest_from_env(monkeypatch, tmp_path: Path) -> None:
    doc = deployment(**{"metadata.annotations": {"infopt.dev/variant": "fp32", "infopt.dev/artifact-sha256": SHA}})
    monkeypatch.setenv("INFOPT_MANIFEST", str(tmp_path / "absent.json"))
    [message] = check_resource("artifact-within-accuracy-budget", doc)
    assert "cannot check artifact against the manifest" in message and "absent.json" in message


def guardrails(namespace: str = "inference-acme", gpu: str = "1", cpu: str = "8") -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {"infopt.dev/tenant": "acme"}},
        },
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "quota", "namespace": namespace},
            "spec": {
                "hard": {"requests.cpu": cpu, "requests.memory": "16Gi", "requests.nvidia.com/gpu": gpu, "pods": "12"}
            },
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "defaults", "namespace": namespace},
            "spec": {"limits": []},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny", "namespace": namespace},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        },
    ]


def test_tenant_namespace_guardrails() -> None:
    assert check_stack("tenant-namespace-guardrails", guardrails()) == []
    missing = [d for d in guardrails() if d["kind"] not in ("LimitRange", "NetworkPolicy")]
    assert check_stack("tenant-namespace-guardrails", missing) == [
        "tenant namespace 'inference-acme' has no LimitRange",
        "tenant namespace 'inference-acme' has no default-deny NetworkPolicy (all pods, Ingress+Egress)",
    ]


def test_gpu_only_where_quota_allows() -> None:
    gpu = deployment()
    pod(gpu)["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "1"
    assert check_stack("gpu-only-where-quota-allows", [*guardrails(gpu="1"), gpu]) == []
    assert check_stack("gpu-only-where-quota-allows", [*guardrails(gpu="0"), gpu]) == [
        "svc: requests GPUs in namespace 'inference-acme', whose ResourceQuota allows none "
        "(requests.nvidia.com/gpu = 0)"
    ]


def test_priority_class_exists() -> None:
    klass = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "infopt-premium"}}
    assert check_stack("priority-class-exists", [klass, deployment()]) == []
    assert check_stack("priority-class-exists", [deployment()]) == [
        "svc: priorityClassName 'infopt-premium' does not exist (declared: [])"
    ]
    unset = deployment()
    del pod(unset)["priorityClassName"]
    assert check_stack("priority-class-exists", [klass, unset]) == ["svc: serving pod has no priorityClassName"]


@pytest.mark.parametrize(("cpu_quota", "violations"), [("8", 0), ("6", 1)])
def test_hpa_max_fits_quota(cpu_quota: str, violations: int) -> None:
    # 6 replicas + 1 surge pod x 1 cpu = 7 cpu
    found = check_stack("hpa-max-fits-quota", [*guardrails(cpu=cpu_quota), deployment(), hpa(2, 6)])
    assert len(found) == violations
    if violations:
        assert found[0] == (
            "namespace 'inference-acme': HPAs at maxReplicas (+ rollout surge) need cpu 7, "
            "ResourceQuota requests.cpu is 6"
        )
