"""Run a stack's planned Deployments for real with `podman kube play`, on this machine's loopback.

What runs are the plan's own Deployment objects (init container, containers, command and args,
securityContext, resources, volumes, probes) and the ConfigMaps they mount. `localize` changes only what
one machine without a cluster or a registry needs, and each change is listed here:
- images: every planned image reference -> the locally built image of the same Dockerfile;
- artifact store: the init container's `--url <stack artifactBaseUrl>/<sha256>.tar.gz` -> the same bundle
  name on a local artifact server on 127.0.0.1 (the `--sha256` it verifies is untouched);
- network: the pod shares the host's network namespace (`hostNetwork: true`), so each server binds
  127.0.0.1 instead of all addresses, on a free port instead of 8000/8001 (`containerPort`, the probes'
  named ports and the gateway's `--vllm-url` follow; the `ports` list itself is left out of what is
  played, since podman 4.3 turns it into port mappings that a host-network pod cannot have);
- restarts: `restartPolicy: Never`. podman 4.3 applies a pod's restart policy to its init containers as
  well, so under a Deployment's `Always` an init container that succeeded would run again forever (the
  kubelet runs each init container to completion once). With `Never`, a failed init container leaves the
  pod failed where a cluster would retry it with back-off: the same outcome for an artifact whose hash
  does not match, and a stopped container stays stopped for inspection;
- names: a suffix on each Deployment and ConfigMap, and each emptyDir named after its pod (podman 4.3
  keeps a ConfigMap or an emptyDir as a volume of that name, so two pods' `models` emptyDirs would be
  one volume), so pods and runs side by side on one machine do not share or collide;
- the config volume: the plan mounts /etc/infopt as a `projected` volume of the deployment's Secret
  (params.yaml, with the tenants' API-key hashes) and its ConfigMap (manifest.json). podman 4.3 supports
  neither projected nor secret volumes (only hostPath, configMap, emptyDir and persistentVolumeClaim), so
  the files the projected volume would show, under the same paths, are played as one ConfigMap named
  after the pod and the volume, mounted at the same mountPath, read-only as planned. The Secret itself is
  not played (podman would turn it into a podman secret that `kube down` leaves behind). Who may read
  the Secret through the API (RBAC) is a cluster matter in any case.

What podman does not do: Services, HorizontalPodAutoscalers, PodDisruptionBudgets, NetworkPolicies,
ResourceQuotas, LimitRanges, RBAC, ServiceAccounts (the pod's `serviceAccountName` and its workload-identity
annotation have no meaning here: the local artifact server needs no credentials), PriorityClasses,
topology spread constraints and ServiceMonitors are not run; they stay proven by the
strict schema validation and the policy pack of `infopt infra plan`. Podman turns a livenessProbe into a
healthcheck that runs `curl` inside the container on a systemd timer and does not act on readiness
probes, so the runner performs the planned httpGet probes itself, from the host, as the kubelet does.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from ruamel.yaml import YAML

from harness.child_server import free_port

PODMAN_TIMEOUT_S = 180  # kube play / down / inspect on a loaded machine
FETCH_CONTAINER = "fetch-artifact"  # infra/serving_deployment.py's init container
GATEWAY_CONTAINER = "gateway"
LOOPBACK = "127.0.0.1"


class KubePlayError(RuntimeError):
    """A pod did not start as planned; the message names the pod, the container and its log tail."""


@dataclass(frozen=True)
class Localization:
    """How planned pods are adapted to run on this machine (see the module docstring)."""

    images: Mapping[str, str]  # planned image reference -> local image reference
    artifact_base_url: str  # the stack's artifactStore.baseUrl, as the plan's init containers name it
    local_artifact_url: str  # the local artifact server's base URL
    suffix: str = ""  # appended to each Deployment's name
    port: Callable[[], int] = free_port


@dataclass
class LocalPod:
    """One localized Deployment (with the ConfigMaps it mounts, its config volume among them), played on its own like a Deployment in a
    cluster: one pod failing to start does not keep the others from starting."""

    deployment: str  # the planned Deployment's name
    name: str  # the localized Deployment's name
    documents: list[dict[str, Any]]  # what is played: the ConfigMaps, then the Deployment
    spec: dict[str, Any]  # the localized pod spec, `ports` included (for the probes)
    ports: dict[str, int]  # container name -> the port it listens on (127.0.0.1)
    pod: str = ""  # the podman pod's name, known once played
    play_output: str = ""
    play_failed: bool = False

    @property
    def gateway_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports[GATEWAY_CONTAINER]}"

    def container(self, name: str) -> str:
        return f"{self.pod}-{name}"

    def container_spec(self, name: str) -> dict[str, Any]:
        for item in [*self.spec.get("initContainers", []), *self.spec["containers"]]:
            if item["name"] == name:
                return item
        raise KeyError(f"pod {self.name} has no container {name!r}")


def _volume_sources(volume: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """A volume's ConfigMap and Secret sources as (kind, source): one for a configMap or secret volume,
    each of a projected volume's, none for any other."""
    if "configMap" in volume:
        return [("ConfigMap", volume["configMap"])]
    if "secret" in volume:
        return [("Secret", {**volume["secret"], "name": volume["secret"]["secretName"]})]
    if "projected" in volume:
        kinds = {"configMap": "ConfigMap", "secret": "Secret"}
        found = []
        for source in volume["projected"].get("sources", []):
            keys = sorted(source)
            if len(keys) != 1 or keys[0] not in kinds:
                raise KubePlayError(f"volume {volume['name']}: projected source {keys} is not a configMap or secret")
            found.append((kinds[keys[0]], source[keys[0]]))
        return found
    return []


def serving_documents(documents: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The planned Deployments and the ConfigMaps and Secrets their pods mount, in plan order."""
    objects = [dict(doc) for doc in documents if "kind" in doc]  # a Helm release's arguments have none
    deployments = [doc for doc in objects if doc["kind"] == "Deployment"]
    mounted = {
        (kind, source["name"])
        for doc in deployments
        for volume in doc["spec"]["template"]["spec"].get("volumes", [])
        for kind, source in _volume_sources(volume)
    }
    return [
        doc for doc in objects if doc["kind"] == "Deployment" or (doc["kind"], doc["metadata"].get("name")) in mounted
    ]


def _object_files(doc: Mapping[str, Any]) -> dict[str, str]:
    """key -> text of a ConfigMap (data) or a Secret (stringData, and data decoded from base64)."""
    files = {str(key): str(value) for key, value in (doc.get("data") or {}).items()}
    if doc["kind"] == "Secret":
        try:
            files = {key: base64.b64decode(value, validate=True).decode() for key, value in files.items()}
        except (binascii.Error, UnicodeDecodeError) as error:
            raise KubePlayError(f"Secret {doc['metadata']['name']}: data is not base64 of text ({error})") from None
        files.update({str(key): str(value) for key, value in (doc.get("stringData") or {}).items()})
    return files


def _config_map_of(
    volume: Mapping[str, Any], objects: Mapping[tuple[str, str], Mapping[str, Any]], name: str
) -> dict[str, Any]:
    """One ConfigMap holding the files a secret or projected volume shows, keyed by their paths."""
    data: dict[str, str] = {}
    for kind, source in _volume_sources(volume):
        key = (kind, source["name"])
        if key not in objects:
            raise KubePlayError(f"volume {volume['name']}: the plan has no {kind} {source['name']!r}")
        files = _object_files(objects[key])
        items = source.get("items") or [{"key": k, "path": k} for k in files]
        for item in items:
            if item["key"] not in files:
                raise KubePlayError(f"volume {volume['name']}: {kind} {source['name']} has no key {item['key']!r}")
            if "/" in item["path"] or item["path"] in data:
                raise KubePlayError(
                    f"volume {volume['name']}: path {item['path']!r} is nested or given twice; one ConfigMap "
                    "cannot show it"
                )
            data[item["path"]] = files[item["key"]]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def _set_flag(args: list[str], flag: str, value: str) -> list[str]:
    """`flag value` replaced in place, or appended when absent."""
    if flag in args:
        index = args.index(flag)
        return [*args[: index + 1], value, *args[index + 2 :]]
    return [*args, flag, value]


def _flag(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args and args.index(flag) + 1 < len(args) else None


def _localize_pod(spec: dict[str, Any], loc: Localization) -> dict[str, int]:
    """Rewrite one pod spec in place; returns container name -> its new loopback port."""
    containers = [*spec.get("initContainers", []), *spec["containers"]]
    for container in containers:
        planned = container["image"]
        if planned not in loc.images:
            raise KubePlayError(
                f"container {container['name']}: no local image for {planned!r} (have {sorted(loc.images)})"
            )
        container["image"] = loc.images[planned]
    remap: dict[int, int] = {}
    ports: dict[str, int] = {}
    for container in spec["containers"]:
        args = [str(arg) for arg in container.get("args", [])]
        planned_port = _flag(args, "--port")
        if planned_port is None:
            continue
        port = loc.port()
        remap[int(planned_port)] = port
        ports[container["name"]] = port
        args = _set_flag(_set_flag(args, "--port", str(port)), "--host", LOOPBACK)
        container["args"] = args
        for item in container.get("ports", []):
            if item["containerPort"] == int(planned_port):
                item["containerPort"] = port
    for container in containers:
        args = [str(arg) for arg in container.get("args", [])]
        for old, new in remap.items():
            args = [re.sub(rf"^(http://127\.0\.0\.1):{old}\b", rf"\g<1>:{new}", arg) for arg in args]
        url = _flag(args, "--url")
        if container["name"] == FETCH_CONTAINER and url is not None:
            prefix = loc.artifact_base_url.rstrip("/") + "/"
            if not url.startswith(prefix):
                raise KubePlayError(f"init container --url {url!r} is not under the stack's {prefix!r}")
            args = _set_flag(args, "--url", loc.local_artifact_url.rstrip("/") + "/" + url.removeprefix(prefix))
        container["args"] = args
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            http = container.get(probe, {}).get("httpGet")
            if http is not None and isinstance(http["port"], int) and http["port"] in remap:
                http["port"] = remap[http["port"]]
    spec["hostNetwork"] = True
    spec["restartPolicy"] = "Never"
    return ports


def _own_empty_dirs(spec: dict[str, Any], pod_name: str) -> None:
    """podman 4.3 keeps an emptyDir as a volume named after it, so every pod's `models` emptyDir would be
    one shared volume: name each after its pod."""
    renamed = {}
    for volume in spec.get("volumes", []):
        if "emptyDir" in volume:
            renamed[volume["name"]] = volume["name"] = f"{pod_name}-{volume['name']}"
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        for mount in container.get("volumeMounts", []):
            mount["name"] = renamed.get(mount["name"], mount["name"])


def localize(documents: Iterable[Mapping[str, Any]], loc: Localization) -> list[LocalPod]:
    """The plan's Deployments, each with the ConfigMaps it mounts, adapted to run here."""
    served = serving_documents(documents)
    objects = {(doc["kind"], doc["metadata"]["name"]): doc for doc in served if doc["kind"] != "Deployment"}
    pods: list[LocalPod] = []
    for planned_doc in (doc for doc in served if doc["kind"] == "Deployment"):
        doc = copy.deepcopy(planned_doc)
        planned = doc["metadata"]["name"]
        doc["metadata"]["name"] = f"{planned}{loc.suffix}"
        spec = doc["spec"]["template"]["spec"]
        ports = _localize_pod(spec, loc)
        _own_empty_dirs(spec, doc["metadata"]["name"])
        described = copy.deepcopy(spec)
        mounted = []
        for index, volume in enumerate(spec.get("volumes", [])):
            if "configMap" in volume:
                config_map = copy.deepcopy(dict(objects[("ConfigMap", volume["configMap"]["name"])]))
                # podman keeps a ConfigMap as a named volume of its name: suffixed like the Deployment.
                config_map["metadata"]["name"] += loc.suffix
                volume["configMap"]["name"] = config_map["metadata"]["name"]
                mounted.append(config_map)
            elif "secret" in volume or "projected" in volume:
                config_map = _config_map_of(volume, objects, f"{doc['metadata']['name']}-{volume['name']}")
                spec["volumes"][index] = {"name": volume["name"], "configMap": {"name": config_map["metadata"]["name"]}}
                mounted.append(config_map)
        for container in spec["containers"]:
            # podman 4.3 turns every containerPort into a port mapping, which a host-network pod cannot
            # have; on the host network the port is the server's --port anyway.
            container.pop("ports", None)
        pods.append(LocalPod(planned, doc["metadata"]["name"], [*mounted, doc], described, ports))
    return pods


def _podman(*args: str, timeout_s: float = PODMAN_TIMEOUT_S, check: bool = True) -> subprocess.CompletedProcess[str]:
    if shutil.which("podman") is None:
        raise KubePlayError("podman is not installed (scripts/setup_podman.sh installs it)")
    try:
        result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise KubePlayError(f"`podman {' '.join(args)}` did not finish within {timeout_s:.0f} s") from None
    if check and result.returncode != 0:
        raise KubePlayError(f"`podman {' '.join(args)}` exited with {result.returncode}: {result.stderr[-2000:]}")
    return result


def container_state(name: str) -> dict[str, Any]:
    """podman's State of a container (Status, ExitCode, ...) plus its RestartCount; {} when it does not
    exist."""
    result = _podman("container", "inspect", name, check=False)
    if result.returncode != 0:
        return {}
    inspected = json.loads(result.stdout)[0]
    return {**inspected["State"], "RestartCount": inspected.get("RestartCount", 0)}


def container_inspect(name: str) -> dict[str, Any]:
    return dict(json.loads(_podman("container", "inspect", name).stdout)[0])


def logs(name: str) -> str:
    result = _podman("logs", name, check=False)
    return result.stdout + result.stderr


def probe(pod: LocalPod, container: str, kind: str = "readinessProbe", timeout_s: float = 2.0) -> bool:
    """One planned httpGet probe against the container's loopback port: success is a 2xx/3xx answer."""
    spec = pod.container_spec(container)
    http = spec[kind]["httpGet"]
    port = http["port"]
    if isinstance(port, str):
        port = next(item["containerPort"] for item in spec["ports"] if item.get("name") == port)
    try:
        status = httpx.get(f"http://{LOOPBACK}:{port}{http.get('path', '/')}", timeout=timeout_s).status_code
    except httpx.HTTPError:
        return False
    return 200 <= status < 400


def _pod_name(pod: LocalPod) -> str:
    """podman names a Deployment's pod `<name>-pod-0` (4.3) or `<name>-pod` (later versions)."""
    for name in (f"{pod.name}-pod-0", f"{pod.name}-pod"):
        if _podman("pod", "exists", name, check=False).returncode == 0:
            return name
    return ""


def play(pod: LocalPod, folder: Path) -> None:
    """`podman kube play` one pod: creates it and starts its init containers, then its containers. A
    failing init container makes podman exit non-zero and leaves the pod in place; that is recorded
    (`play_failed`, `play_output`) for `wait_ready` and the caller to inspect."""
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{pod.name}.yaml"
    with path.open("w") as handle:
        yaml.dump_all(pod.documents, handle)
    result = _podman("kube", "play", str(path), check=False)
    pod.play_output = result.stdout + result.stderr
    pod.play_failed = result.returncode != 0
    pod.pod = _pod_name(pod)
    if not pod.pod:
        raise KubePlayError(f"podman created no pod for Deployment {pod.name}: {pod.play_output[-2000:]}")


def down(pod: LocalPod) -> None:
    """Remove the pod, its containers with any anonymous volumes, and the volumes podman created by name
    for its ConfigMaps and emptyDirs (podman 4.3's `pod rm` leaves all of those behind)."""
    name = pod.pod or _pod_name(pod)
    if name:
        listed = _podman("ps", "--all", "--filter", f"pod={name}", "--format", "{{.ID}}", check=False).stdout.split()
        if listed:
            _podman("rm", "--force", "--volumes", *listed, check=False)
        _podman("pod", "rm", "--force", name, check=False)
    for volume in _named_volumes(pod):
        if _podman("volume", "exists", volume, check=False).returncode == 0:
            _podman("volume", "rm", "--force", volume, check=False)


def _named_volumes(pod: LocalPod) -> list[str]:
    """The volumes podman creates by name for a pod: one per ConfigMap and one per emptyDir."""
    config_maps = [doc["metadata"]["name"] for doc in pod.documents if doc["kind"] == "ConfigMap"]
    return [*config_maps, *(v["name"] for v in pod.spec.get("volumes", []) if "emptyDir" in v)]


def init_failed(pod: LocalPod, name: str) -> bool:
    """An init container failed: it exited non-zero, or podman's restart policy (the Deployment's
    `Always`, as the kubelet's back-off) has already run it again."""
    state = container_state(pod.container(name))
    return (state.get("Status") == "exited" and state.get("ExitCode") != 0) or state.get("RestartCount", 0) > 0


def wait_ready(pod: LocalPod, timeout_s: float, poll_s: float = 0.5) -> float:
    """Seconds until every planned readiness probe of the pod passes; KubePlayError naming the container
    and its log when the init container fails, a container exits, or the time runs out."""
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        for init in pod.spec.get("initContainers", []):
            if init_failed(pod, init["name"]):
                raise KubePlayError(
                    f"pod {pod.pod}: init container {init['name']} failed; the pod's containers were not started; "
                    f"log:\n{logs(pod.container(init['name']))[-2000:]}"
                )
        for container in pod.spec["containers"]:
            state = container_state(pod.container(container["name"]))
            if state.get("Status") == "exited":
                raise KubePlayError(
                    f"pod {pod.pod}: container {container['name']} exited with {state.get('ExitCode')}; "
                    f"log:\n{logs(pod.container(container['name']))[-2000:]}"
                )
        if all(probe(pod, c["name"]) for c in pod.spec["containers"] if "readinessProbe" in c):
            return time.monotonic() - started
        time.sleep(poll_s)
    raise KubePlayError(f"pod {pod.pod}: not ready within {timeout_s:.0f} s; podman said: {pod.play_output[-1500:]}")


@contextmanager
def kube_play(pods: list[LocalPod], folder: Path) -> Iterator[list[LocalPod]]:
    """Play every pod (each on its own); all are removed on exit, whatever happened."""
    try:
        for pod in pods:
            play(pod, folder)
        yield pods
    finally:
        for pod in pods:
            down(pod)


def run_flags(security_context: Mapping[str, Any]) -> list[str]:
    """`podman run` flags that enforce a container securityContext of the plan, for containers run
    outside `kube play` (the vLLM pairing test): user, read-only root, capabilities, privilege escalation."""
    flags: list[str] = []
    if "runAsUser" in security_context:
        group = security_context.get("runAsGroup", security_context["runAsUser"])
        flags.append(f"--user={security_context['runAsUser']}:{group}")
    if security_context.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    flags += [f"--cap-drop={cap}" for cap in security_context.get("capabilities", {}).get("drop", [])]
    if security_context.get("allowPrivilegeEscalation") is False:
        flags.append("--security-opt=no-new-privileges")
    if security_context.get("privileged"):
        raise KubePlayError("refusing to run a privileged container")
    return flags
