"""The policy pack as Pulumi runs it: its own process and analyzer server, spoken to over gRPC.

Every rule is checked on a compliant stack and on the violation it exists for, through `Configure`,
`Analyze` and `AnalyzeStack`, the calls `pulumi preview --policy-pack policies` makes.
"""

from __future__ import annotations

import ast
import copy
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from infopt.manifest import load_manifest
from infra.policy_analyzer import AnalyzedResource, PolicyAnalyzer
from infra.policy_config import artifact_decisions

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "policies"
FIXTURE_MANIFEST = ROOT / "tests" / "fixtures" / "manifest.json"
DIGEST = "sha256:" + "a" * 64
TYPES = {
    "Deployment": "kubernetes:apps/v1:Deployment",
    "Namespace": "kubernetes:core/v1:Namespace",
    "ResourceQuota": "kubernetes:core/v1:ResourceQuota",
    "LimitRange": "kubernetes:core/v1:LimitRange",
    "NetworkPolicy": "kubernetes:networking.k8s.io/v1:NetworkPolicy",
    "PriorityClass": "kubernetes:scheduling.k8s.io/v1:PriorityClass",
    "HorizontalPodAutoscaler": "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
    "PodDisruptionBudget": "kubernetes:policy/v1:PodDisruptionBudget",
    "ConfigMap": "kubernetes:core/v1:ConfigMap",
}
MANIFEST = load_manifest(FIXTURE_MANIFEST)
WITHIN = MANIFEST.variant("int8-dynamic").artifact("onnxruntime").sha256
OVER = MANIFEST.variant("pruned-heads-25").artifact("onnxruntime").sha256
CONFIG = {
    "images-pinned-by-digest": {"requireImageDigests": True},
    "artifact-is-deployable": {"artifacts": artifact_decisions(MANIFEST)},
}
SVC = "deployment-inference-acme-svc"


def resource(doc: dict[str, Any], timeouts: tuple[float, float, float] = (1560.0, 1560.0, 0.0)) -> AnalyzedResource:
    meta = doc["metadata"]
    name = "-".join(p for p in (doc["kind"].lower(), meta.get("namespace"), meta["name"]) if p)
    urn = f"urn:pulumi:t::infopt::{TYPES[doc['kind']]}::{name}"
    return AnalyzedResource(TYPES[doc["kind"]], name, urn, doc, timeouts)


def run(
    analyzer: PolicyAnalyzer, docs: list[dict[str, Any]], config: dict[str, Any] | None = None, **kw: Any
) -> list[tuple[str, str]]:
    analyzer.configure(CONFIG if config is None else config)
    resources = [resource(doc, **kw) for doc in docs]
    found = []
    for item in resources:
        found += analyzer.analyze(item)
    found += analyzer.analyze_stack(resources, "urn:pulumi:t::infopt::pulumi:pulumi:Stack::infopt-t")
    return [(d.policy, d.message) for d in found]


def server(sha: str = WITHIN, namespace: str = "inference-acme") -> dict[str, Any]:
    size = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    secure = {"runAsNonRoot": True, "runAsUser": 10001, "allowPrivilegeEscalation": False}
    fetch = {
        "name": "fetch-artifact",
        "image": f"ghcr.io/infopt/gateway@{DIGEST}",
        "command": ["infopt"],
        "args": ["artifact", "fetch", "--url", f"s3://b/a/{sha}.tar.gz", "--sha256", sha, "--dest", "/models/m"],
        "resources": copy.deepcopy(size),
        "securityContext": dict(secure),
    }
    gateway = {
        "name": "gateway",
        "image": f"ghcr.io/infopt/gateway@{DIGEST}",
        "command": ["infopt"],
        "args": ["serve", "--deployment", "svc", "--model-dir", "/models/m"],
        "resources": copy.deepcopy(size),
        "securityContext": dict(secure),
    }
    labels = {"app.kubernetes.io/name": "svc"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "svc", "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": labels},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"priorityClassName": "infopt-premium", "initContainers": [fetch], "containers": [gateway]},
            },
        },
    }


def guardrails(namespace: str = "inference-acme", gpu: str = "1", cpu: str = "8") -> list[dict[str, Any]]:
    hard = {"requests.cpu": cpu, "requests.memory": "16Gi", "requests.nvidia.com/gpu": gpu, "pods": "12"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "quota", "namespace": namespace},
            "spec": {"hard": hard},
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "d", "namespace": namespace},
            "spec": {"limits": []},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny", "namespace": namespace},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "svc", "namespace": namespace},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "svc"}}},
        },
    ]


PRIORITY = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "infopt-premium"}}


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


def pod(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


# ----------------------------------------------------------------------------- the pack stands alone
def test_pack_imports_nothing_of_the_project() -> None:
    allowed = set(sys.stdlib_module_names) | {"pulumi_policy", "infopt_policy", "__future__"}
    files = [path for path in PACK.rglob("*.py") if "venv" not in path.parts]
    assert len(files) >= 4
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.relative_to(ROOT)} imports {name}"


def test_pack_has_its_own_version_and_requirements() -> None:
    project = YAML(typ="safe").load((PACK / "PulumiPolicy.yaml").read_text())
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": "venv"}}
    assert [int(part) for part in str(project["version"]).split(".")] >= [2, 0, 0]
    lines = (PACK / "requirements.txt").read_text().splitlines()
    assert [line.split(">")[0] for line in lines if line and not line.startswith("#")] == ["pulumi-policy", "pulumi"]


def test_pack_server_lists_its_mandatory_policies(analyzer: PolicyAnalyzer) -> None:
    assert analyzer.info is not None and analyzer.info.name == "infopt"
    assert len(analyzer.policy_names) == 13
    assert {p.enforcementLevel for p in analyzer.info.policies} == {1}  # MANDATORY


# ----------------------------------------------------------------------------- rules through the analyzer
def test_compliant_stack_is_clean(analyzer: PolicyAnalyzer) -> None:
    assert run(analyzer, [PRIORITY, *guardrails(), server(), hpa(2, 6)]) == []


def test_over_budget_artifact_is_caught_whatever_the_annotations_say(analyzer: PolicyAnalyzer) -> None:
    spoofed = server(sha=OVER)
    spoofed["metadata"]["annotations"] = {"infopt.dev/variant": "int8-dynamic", "infopt.dev/artifact-sha256": WITHIN}
    assert run(analyzer, [PRIORITY, *guardrails(), spoofed]) == [
        (
            "artifact-is-deployable",
            f"{SVC}: container 'fetch-artifact' fetches artifact {OVER}: "
            "variant 'pruned-heads-25' is not within the accuracy budget: paired loss vs fp32 +0.0169, upper bound +0.0224 (95%), budget 0.01",
        )
    ]


def test_server_without_a_verified_fetch_is_caught(analyzer: PolicyAnalyzer) -> None:
    bare = server()
    del pod(bare)["initContainers"]
    [(policy, message)] = run(analyzer, [PRIORITY, *guardrails(), bare])
    assert policy == "artifact-is-deployable"
    assert "serves a model from '/models/m', which no verified `infopt artifact fetch`" in message
    assert run(analyzer, [PRIORITY, *guardrails(), server(sha="b" * 64)]) == [
        (
            "artifact-is-deployable",
            f"{SVC}: container 'fetch-artifact' fetches artifact {'b' * 64}, which is not an artifact of the manifest",
        )
    ]
    # Without the manifest's decisions in the config nothing is known to be deployable (and digests are required).
    assert [policy for policy, _ in run(analyzer, [PRIORITY, *guardrails(), server()], config={})] == [
        "artifact-is-deployable"
    ]


def test_every_namespace_hosting_a_workload_needs_guardrails(analyzer: PolicyAnalyzer) -> None:
    elsewhere = server(namespace="team-x")  # no labels anywhere: the namespace is found from the workload
    found = run(analyzer, [PRIORITY, *guardrails(), elsewhere])
    host = "deployment-team-x-svc"
    assert found == [
        ("namespace-guardrails", f"namespace 'team-x' hosts {host} but is not declared by the stack (no guardrails)"),
        ("namespace-guardrails", "namespace 'team-x' hosts workloads but has no ResourceQuota"),
        ("namespace-guardrails", "namespace 'team-x' hosts workloads but has no LimitRange"),
        ("namespace-guardrails", "namespace 'team-x' hosts workloads but has no default-deny NetworkPolicy (all pods)"),
        ("workloads-have-disruption-budgets", f"{host}: no PodDisruptionBudget in 'team-x' selects its pods"),
    ]


def test_digests_follow_the_policy_config_and_fail_closed(analyzer: PolicyAnalyzer) -> None:
    tagged = server()
    for container in (*pod(tagged)["initContainers"], *pod(tagged)["containers"]):
        container["image"] = "ghcr.io/infopt/gateway:main"
    docs = [PRIORITY, *guardrails(), tagged]
    relaxed = {**CONFIG, "images-pinned-by-digest": {"requireImageDigests": False}}
    assert run(analyzer, docs, relaxed) == []
    assert [policy for policy, _ in run(analyzer, docs)] == ["images-pinned-by-digest"] * 2
    unset = {"artifact-is-deployable": CONFIG["artifact-is-deployable"]}
    assert [policy for policy, _ in run(analyzer, docs, unset)] == ["images-pinned-by-digest"] * 2


def test_api_key_hashes_in_a_configmap_are_caught(analyzer: PolicyAnalyzer) -> None:
    leaky = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "svc-config", "namespace": "inference-acme"},
        "data": {"params.yaml": "tenants:\n- name: acme\n  api_key_sha256: [abc]\n"},
    }
    [(policy, message)] = run(analyzer, [leaky])
    assert policy == "no-credentials-in-configmaps" and "data['params.yaml'] holds api_key_sha256" in message


def test_pulumi_await_must_cover_fetch_and_startup(analyzer: PolicyAnalyzer) -> None:
    vllm = server()
    probe = {"httpGet": {"path": "/health", "port": 8001}, "periodSeconds": 10, "failureThreshold": 60}
    sidecar = {**pod(vllm)["containers"][0], "name": "vllm", "command": [], "args": ["--model", "/models/m"]}
    pod(vllm)["containers"].append({**sidecar, "startupProbe": probe})
    docs = [PRIORITY, *guardrails(), vllm]
    assert run(analyzer, docs) == []  # 1560 s >= fetch 300 + startup 600
    assert run(analyzer, docs, timeouts=(0.0, 0.0, 0.0)) == [  # Pulumi's default: 600 s
        (
            "deployment-await-covers-startup",
            f"{SVC}: Pulumi waits 600 s on {phase}, less than the artifact fetch (300 s) plus the startup probe "
            f"(600 s); set customTimeouts.{phase} to at least 900 s",
        )
        for phase in ("create", "update")
    ]


def test_container_rules(analyzer: PolicyAnalyzer) -> None:
    bad = server()
    gateway = pod(bad)["containers"][0]
    del gateway["resources"]["limits"]["memory"]
    gateway["securityContext"] = {"runAsUser": 0, "privileged": True}
    pod(bad)["hostNetwork"] = True
    pod(bad)["volumes"] = [{"name": "host", "hostPath": {"path": "/"}}]
    where = f"{SVC}: container 'gateway'"
    assert run(analyzer, [PRIORITY, *guardrails(), bad]) == [
        ("containers-have-requests-and-limits", f"{where} has no limits for ['memory']"),
        ("containers-run-as-non-root", f"{where} does not set runAsNonRoot: true"),
        ("containers-run-as-non-root", f"{where} runs as user 0"),
        ("no-privileged-or-host-access", f"{SVC}: pod sets hostNetwork: true"),
        ("no-privileged-or-host-access", f"{SVC}: volume 'host' is a hostPath"),
        ("no-privileged-or-host-access", f"{where} is privileged"),
    ]


def test_priority_class_must_exist_for_every_pod(analyzer: PolicyAnalyzer) -> None:
    assert run(analyzer, [*guardrails(), server()]) == [
        ("priority-class-exists", f"{SVC}: priorityClassName 'infopt-premium' does not exist (declared: [])")
    ]
    unset = server()
    del pod(unset)["priorityClassName"]
    assert run(analyzer, [PRIORITY, *guardrails(), unset]) == [
        ("priority-class-exists", f"{SVC}: pod has no priorityClassName")
    ]


def test_gpu_and_hpa_quota_rules(analyzer: PolicyAnalyzer) -> None:
    gpu = server()
    pod(gpu)["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "1"
    assert run(analyzer, [PRIORITY, *guardrails(gpu="0"), gpu]) == [
        (
            "gpu-only-where-quota-allows",
            f"{SVC}: requests GPUs in namespace 'inference-acme', whose ResourceQuota allows none "
            "(requests.nvidia.com/gpu = 0)",
        )
    ]
    assert run(analyzer, [PRIORITY, *guardrails(), server(), hpa(5, 3)]) == [
        ("hpa-replica-bounds", "horizontalpodautoscaler-inference-acme-svc: minReplicas 5 > maxReplicas 3")
    ]
    # 6 replicas + 1 surge pod x 1 cpu = 7 cpu against a quota of 6
    assert run(analyzer, [PRIORITY, *guardrails(cpu="6"), server(), hpa(2, 6)]) == [
        (
            "hpa-max-fits-quota",
            "namespace 'inference-acme': HPAs at maxReplicas (+ rollout surge) need cpu 7, "
            "ResourceQuota requests.cpu is 6",
        )
    ]


@pytest.mark.parametrize("change", ["missing", "other-selector"])
def test_deployment_needs_a_disruption_budget(analyzer: PolicyAnalyzer, change: str) -> None:
    docs = [d for d in [PRIORITY, *guardrails(), server()] if d["kind"] != "PodDisruptionBudget"]
    if change == "other-selector":
        budget = next(d for d in guardrails() if d["kind"] == "PodDisruptionBudget")
        budget["spec"]["selector"] = {"matchLabels": {"app.kubernetes.io/name": "other"}}
        docs.append(budget)
    assert run(analyzer, docs) == [
        ("workloads-have-disruption-budgets", f"{SVC}: no PodDisruptionBudget in 'inference-acme' selects its pods")
    ]
