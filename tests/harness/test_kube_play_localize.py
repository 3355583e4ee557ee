"""`localize`: a planned pod adapted to run on this machine, changed only where harness/kube_play.py says.

Runs on the dev stack's real plan (tests/fixtures/manifest.json); no podman needed.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import pytest

from harness.kube_play import KubePlayError, Localization, localize, run_flags, serving_documents
from harness.stack_run import (
    StackRunError,
    check_bundles,
    local_images_needed,
    planned_artifacts,
    planned_images,
)
from infopt.manifest import load_manifest
from infopt.params import load_params
from infra.plan import plan
from infra.serving_deployment import CONTAINER_SECURITY, POD_SECURITY
from infra.stack_config import load_stack_config, stack_file

ROOT = Path(__file__).resolve().parents[2]
STORE = "http://artifact-store.infopt-system.svc.cluster.local:8080/artifacts"  # stacks/Pulumi.dev.yaml
PLANNED_GATEWAY = "ghcr.io/infopt/gateway-onnxruntime:main"
LOCAL_GATEWAY = "localhost/infopt/gateway-onnxruntime:src-0123456789abcdef"


@pytest.fixture(scope="module")
def documents() -> list[dict[str, Any]]:
    manifest_path = ROOT / "tests/fixtures/manifest.json"
    stack = load_stack_config(stack_file("dev", ROOT / "stacks"))
    result = plan(load_params(ROOT / "params.yaml"), load_manifest(manifest_path), stack, "dev")
    assert result.ok
    return [resource.manifest for resource in result.resources]


def _localization(**changes: Any) -> Localization:
    ports = itertools.count(41000)
    base = {
        "images": {PLANNED_GATEWAY: LOCAL_GATEWAY},
        "artifact_base_url": STORE,
        "local_artifact_url": "http://127.0.0.1:39999",
        "suffix": "-t1",
        "port": lambda: next(ports),
    }
    return Localization(**{**base, **changes})


def _deployment(documents: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(doc for doc in documents if doc.get("kind") == "Deployment" and doc["metadata"]["name"] == name)


def _without(args: list[str], *flags: str) -> list[str]:
    """`args` with each `flag value` pair removed."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        else:
            kept.append(arg)
    return kept


def test_only_deployments_and_what_their_pods_mount_are_played(documents: list[dict[str, Any]]) -> None:
    kinds = {doc.get("kind") for doc in documents}
    assert {"Service", "HorizontalPodAutoscaler", "NetworkPolicy", "ResourceQuota", "ServiceAccount"} <= kinds
    assert None in kinds  # the metrics adapter's Helm release: arguments, not a Kubernetes object
    served = serving_documents(documents)
    assert sorted((doc["kind"], doc["metadata"]["name"]) for doc in served) == [
        ("ConfigMap", "textcls-premium-config"),
        ("ConfigMap", "textcls-shared-config"),
        ("Deployment", "textcls-premium"),
        ("Deployment", "textcls-shared"),
        ("Secret", "textcls-premium-params"),
        ("Secret", "textcls-shared-params"),
    ]


def _planned(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(doc for doc in documents if doc.get("kind") == kind and doc["metadata"]["name"] == name)


def test_the_projected_config_volume_is_played_as_one_configmap_of_the_same_files(
    documents: list[dict[str, Any]],
) -> None:
    """podman 4.3 has no projected or secret volumes: the files /etc/infopt would show (params.yaml from the
    Secret, manifest.json from the ConfigMap) become one ConfigMap, mounted where the plan mounts it."""
    planned_spec = _deployment(documents, "textcls-premium")["spec"]["template"]["spec"]
    planned_volume = next(v for v in planned_spec["volumes"] if v["name"] == "config")
    assert sorted(next(iter(s)) for s in planned_volume["projected"]["sources"]) == ["configMap", "secret"]
    (pod,) = [p for p in localize(documents, _localization()) if p.deployment == "textcls-premium"]
    config_map, deployment = pod.documents
    assert config_map["kind"] == "ConfigMap" and config_map["metadata"]["name"] == "textcls-premium-t1-config"
    secret = _planned(documents, "Secret", "textcls-premium-params")
    manifest = _planned(documents, "ConfigMap", "textcls-premium-config")
    assert config_map["data"] == {
        "params.yaml": secret["stringData"]["params.yaml"],
        "manifest.json": manifest["data"]["manifest.json"],
    }
    assert "name: textcls-premium" in config_map["data"]["params.yaml"]
    spec = deployment["spec"]["template"]["spec"]
    assert next(v for v in spec["volumes"] if v["name"] == "config") == {
        "name": "config",
        "configMap": {"name": "textcls-premium-t1-config"},
    }
    (gateway,) = spec["containers"]
    assert {"name": "config", "mountPath": "/etc/infopt", "readOnly": True} in gateway["volumeMounts"]
    assert spec["serviceAccountName"] == planned_spec["serviceAccountName"] == "infopt-model-server"


def test_secret_data_is_decoded_and_a_missing_key_is_named(documents: list[dict[str, Any]]) -> None:
    deployment = copy.deepcopy(_deployment(documents, "textcls-premium"))
    spec = deployment["spec"]["template"]["spec"]
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "config"] + [
        {"name": "config", "secret": {"secretName": "keys", "items": [{"key": "k", "path": "params.yaml"}]}}
    ]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"}, "data": {"k": "aGVsbG8="}}
    (pod,) = localize([secret, deployment], _localization())
    assert pod.documents[0]["data"] == {"params.yaml": "hello"}
    secret["data"] = {"other": "aGVsbG8="}
    with pytest.raises(KubePlayError, match="volume config: Secret keys has no key 'k'"):
        localize([secret, deployment], _localization())
    with pytest.raises(KubePlayError, match="the plan has no Secret 'keys'"):
        localize([deployment], _localization())


def test_localized_pod_differs_from_the_plan_only_in_the_listed_fields(documents: list[dict[str, Any]]) -> None:
    planned = _deployment(documents, "textcls-premium")
    pods = localize(documents, _localization())
    pod = next(p for p in pods if p.deployment == "textcls-premium")
    played = pod.documents[-1]
    assert [doc["kind"] for doc in pod.documents] == ["ConfigMap", "Deployment"]
    assert played["metadata"]["name"] == pod.name == "textcls-premium-t1"
    assert pod.documents[0]["metadata"]["name"] == "textcls-premium-t1-config"

    spec, planned_spec = played["spec"]["template"]["spec"], planned["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["restartPolicy"] == "Never"
    (fetch,), (gateway,) = spec["initContainers"], spec["containers"]
    (planned_fetch,), (planned_gateway,) = planned_spec["initContainers"], planned_spec["containers"]
    assert fetch["image"] == gateway["image"] == LOCAL_GATEWAY
    sha = planned_fetch["args"][planned_fetch["args"].index("--sha256") + 1]
    assert fetch["args"] == [
        "artifact", "fetch", "--url", f"http://127.0.0.1:39999/{sha}.tar.gz", "--sha256", sha,
        "--dest", "/models/int8-dynamic", "--timeout-s", "300",
    ]  # fmt: skip
    assert fetch["env"] == planned_fetch["env"] == [{"name": "HOME", "value": "/tmp"}]
    assert planned_fetch["args"][planned_fetch["args"].index("--url") + 1] == f"{STORE}/{sha}.tar.gz"
    args = gateway["args"]
    port = pod.ports["gateway"]  # one of the counter's ports: the plan's resource order is not fixed
    assert port >= 41000 and len({p.ports["gateway"] for p in pods}) == len(pods)  # each pod its own port
    assert args[args.index("--host") + 1] == "127.0.0.1" and args[args.index("--port") + 1] == str(port)
    assert pod.ports == {"gateway": port} and pod.gateway_url == f"http://127.0.0.1:{port}"
    assert "ports" not in gateway  # podman 4.3 would turn them into port mappings
    assert pod.container_spec("gateway")["ports"][0]["containerPort"] == port  # the named probe port
    # Everything else is the plan's, field for field.
    for key in ("securityContext", "resources", "livenessProbe", "readinessProbe", "command"):
        assert gateway[key] == planned_gateway[key], key
    assert fetch["securityContext"] == planned_fetch["securityContext"]
    for key in (
        "securityContext",
        "terminationGracePeriodSeconds",
        "priorityClassName",
        "serviceAccountName",
        "automountServiceAccountToken",
        "topologySpreadConstraints",
    ):
        assert spec[key] == planned_spec[key], key
    assert _without(args, "--host", "--port") == _without(planned_gateway["args"], "--host", "--port")
    # Volumes: the same paths; emptyDirs named after the pod, the projected config as a ConfigMap.
    assert [(v["name"], sorted(v)) for v in spec["volumes"]] == [
        ("textcls-premium-t1-models", ["emptyDir", "name"]),
        ("textcls-premium-t1-tmp", ["emptyDir", "name"]),
        ("config", ["configMap", "name"]),
    ]
    assert [m["mountPath"] for m in gateway["volumeMounts"]] == [
        m["mountPath"] for m in planned_gateway["volumeMounts"]
    ]


def test_the_plan_itself_is_not_modified(documents: list[dict[str, Any]]) -> None:
    before = copy.deepcopy(documents)
    localize(documents, _localization())
    assert documents == before


def test_each_pod_gets_its_own_port_and_volumes(documents: list[dict[str, Any]]) -> None:
    pods = localize(documents, _localization())
    assert sorted(p.ports["gateway"] for p in pods) == [41000, 41001]
    volumes = [
        v["name"] for p in pods for v in p.documents[-1]["spec"]["template"]["spec"]["volumes"] if "emptyDir" in v
    ]
    assert len(volumes) == len(set(volumes)) == 4


def test_a_planned_image_without_a_local_build_is_refused(documents: list[dict[str, Any]]) -> None:
    with pytest.raises(KubePlayError, match=r"no local image for 'ghcr.io/infopt/gateway-onnxruntime:main'"):
        localize(documents, _localization(images={}))


def test_an_artifact_url_outside_the_stack_store_is_refused(documents: list[dict[str, Any]]) -> None:
    with pytest.raises(KubePlayError, match="is not under the stack's"):
        localize(documents, _localization(artifact_base_url="https://elsewhere.example/artifacts"))


def test_vllm_pods_bind_loopback_and_the_gateway_follows_the_vllm_port(documents: list[dict[str, Any]]) -> None:
    deployment = copy.deepcopy(_deployment(documents, "textcls-shared"))
    spec = deployment["spec"]["template"]["spec"]
    spec["containers"][0]["args"] += ["--vllm-url", "http://127.0.0.1:8001"]
    spec["containers"].append(
        {
            "name": "vllm",
            "image": "docker.io/vllm/vllm-openai:v0.11.0",
            "args": ["--model", "/models/x", "--port", "8001"],
            "ports": [{"name": "vllm", "containerPort": 8001}],
            "readinessProbe": {"httpGet": {"path": "/health", "port": "vllm"}},
        }
    )
    config = [doc for doc in serving_documents(documents) if doc["metadata"]["name"].startswith("textcls-shared-")]
    images = {PLANNED_GATEWAY: LOCAL_GATEWAY, "docker.io/vllm/vllm-openai:v0.11.0": "localhost/infopt/vllm-cpu:src-1"}
    (pod,) = localize([*config, deployment], _localization(images=images))
    gateway, vllm = pod.documents[-1]["spec"]["template"]["spec"]["containers"]
    assert pod.ports == {"gateway": 41000, "vllm": 41001}
    assert vllm["args"] == ["--model", "/models/x", "--port", "41001", "--host", "127.0.0.1"]
    assert gateway["args"][gateway["args"].index("--vllm-url") + 1] == "http://127.0.0.1:41001"
    assert vllm["image"] == "localhost/infopt/vllm-cpu:src-1"


def test_stack_helpers_name_what_a_run_needs(documents: list[dict[str, Any]], tmp_path: Path) -> None:
    stack_images = {"gateway-onnxruntime": PLANNED_GATEWAY, "vllm": "docker.io/vllm/vllm-openai:v0.11.0"}
    assert planned_images(documents) == {PLANNED_GATEWAY}
    assert local_images_needed(planned_images(documents), stack_images) == {PLANNED_GATEWAY: "gateway-onnxruntime"}
    with pytest.raises(StackRunError, match="are not in the stack's infopt:images"):
        local_images_needed({"ghcr.io/other:1"}, stack_images)
    artifacts = planned_artifacts(documents)
    assert sorted(artifacts) == ["textcls-premium", "textcls-shared"]
    assert len(set(artifacts.values())) == 1  # both serve int8-dynamic
    with pytest.raises(StackRunError, match=rf"lacks the bundle\(s\) textcls-premium: {artifacts['textcls-premium']}"):
        check_bundles(documents, tmp_path)
    (tmp_path / f"{artifacts['textcls-premium']}.tar.gz").write_bytes(b"x")
    check_bundles(documents, tmp_path)


def test_run_flags_enforce_the_planned_security_context() -> None:
    assert run_flags({**POD_SECURITY, **CONTAINER_SECURITY}) == [
        "--user=10001:10001",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
    ]
    with pytest.raises(KubePlayError, match="privileged"):
        run_flags({"privileged": True})
