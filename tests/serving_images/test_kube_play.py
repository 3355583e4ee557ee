"""The dev stack's planned Deployments, run for real with `podman kube play` on 127.0.0.1.

The plan is `infra.plan.plan` for stack dev with the project's params.yaml and a manifest whose
int8-dynamic ONNX artifact is a tiny real model (tests/serving/gateway_kit.py), packed as
`<sha256>.tar.gz` and served by a local artifact server. harness/kube_play.py lists the only changes made
to the planned objects (images, artifact URL, loopback ports, names, restart policy, the projected config
volume played as one ConfigMap); everything else - init container, args, env, securityContext, resources,
emptyDirs, probes - runs as planned.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from harness.kube_play import (
    GATEWAY_CONTAINER,
    KubePlayError,
    container_inspect,
    container_state,
    logs,
    probe,
    serving_documents,
    wait_ready,
)
from harness.stack_run import StackRun, local_images_needed, planned_images, run_stack
from infopt.artifact_store import pack
from infopt.hashing import tree_sha256
from infopt.params import load_params
from infopt.quantity import parse_quantity
from infra.plan import plan
from infra.stack_config import StackConfig, load_stack_config, stack_file
from tests.serving.gateway_kit import LABELS
from tests.serving_images.conftest import SessionImages
from tests.serving_images.kit import VARIANT, tiny_manifest

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120.0  # measured 0.5-2.5 s on a loaded 2-core machine once the image exists
STOP_TIMEOUT_S = 60.0

pytestmark = [pytest.mark.podman, pytest.mark.slow]


def _key(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant}-demo-key"}  # params.yaml's demo keys


class DevPlan:
    def __init__(self, documents: list[dict[str, Any]], stack: StackConfig, bundles: Path, sha256: str) -> None:
        self.documents, self.stack, self.bundles, self.sha256 = documents, stack, bundles, sha256

    def images(self, session_images: SessionImages) -> dict[str, str]:
        stack_images = {key: image.ref(self.stack.image_registry) for key, image in self.stack.images.items()}
        needed = local_images_needed(planned_images(self.documents), stack_images)
        return {planned: session_images.get(name) for planned, name in needed.items()}


@pytest.fixture(scope="module")
def dev_plan(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> DevPlan:
    folder = tmp_path_factory.mktemp("dev-plan")
    manifest_path = folder / "manifest.json"
    manifest = tiny_manifest(tiny_model, manifest_path)
    stack = load_stack_config(stack_file("dev", ROOT / "stacks"))
    result = plan(load_params(ROOT / "params.yaml"), manifest, stack, "dev")
    assert result.ok, (result.schema_errors, result.violations)
    bundles = folder / "bundles"
    pack(tiny_model, bundles)
    return DevPlan([r.manifest for r in result.resources], stack, bundles, tree_sha256(tiny_model))


@pytest.fixture(scope="module")
def dev_stack(
    dev_plan: DevPlan, session_images: SessionImages, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StackRun]:
    with run_stack(
        dev_plan.documents,
        artifact_base_url=dev_plan.stack.artifact_store.base_url,
        images=dev_plan.images(session_images),
        bundles=dev_plan.bundles,
        folder=tmp_path_factory.mktemp("kube-play"),
    ) as running:
        for pod in running.pods:
            wait_ready(pod, READY_TIMEOUT_S)
        yield running


def _exec(container: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "exec", container, *command], capture_output=True, text=True, timeout=60)


def test_every_planned_deployment_runs_with_its_init_container_and_config(
    dev_stack: StackRun, dev_plan: DevPlan
) -> None:
    assert sorted(pod.deployment for pod in dev_stack.pods) == ["textcls-premium", "textcls-shared"]
    planned = {(doc["kind"], doc["metadata"]["name"]): doc for doc in serving_documents(dev_plan.documents)}
    for pod in dev_stack.pods:
        assert [c["name"] for c in pod.spec["initContainers"]] == ["fetch-artifact"]
        assert container_state(pod.container(GATEWAY_CONTAINER))["Status"] == "running"
        # /etc/infopt shows the planned Secret's params.yaml (this deployment and only its tenants) and the
        # planned ConfigMap's manifest.json, byte for byte.
        gateway = pod.container(GATEWAY_CONTAINER)
        params = _exec(gateway, "cat", "/etc/infopt/params.yaml").stdout
        assert params == planned[("Secret", f"{pod.deployment}-params")]["stringData"]["params.yaml"]
        assert f"name: {pod.deployment}" in params
        manifest = _exec(gateway, "cat", "/etc/infopt/manifest.json").stdout
        assert manifest == planned[("ConfigMap", f"{pod.deployment}-config")]["data"]["manifest.json"]


def test_init_container_fetched_the_bundle_and_the_gateway_serves_the_verified_tree(
    dev_stack: StackRun, dev_plan: DevPlan
) -> None:
    bundle = f"{dev_plan.sha256}.tar.gz"
    assert dev_stack.artifacts.fetched(bundle) == [200, 200]  # one fetch per pod, from the local store
    for pod in dev_stack.pods:
        fetch_args = pod.container_spec("fetch-artifact")["args"]
        assert fetch_args[fetch_args.index("--sha256") + 1] == dev_plan.sha256
        assert fetch_args[fetch_args.index("--url") + 1] == f"{dev_stack.artifacts.base_url}/{bundle}"
        gateway_args = pod.container_spec(GATEWAY_CONTAINER)["args"]
        model_dir = gateway_args[gateway_args.index("--model-dir") + 1]
        assert model_dir == f"/models/{VARIANT}"
        code = f"from infopt.hashing import tree_sha256; print(tree_sha256({model_dir!r}))"
        assert _exec(pod.container(GATEWAY_CONTAINER), "python", "-c", code).stdout.strip() == dev_plan.sha256


def _fetch_in_pod(
    pod_container: str, env: dict[str, str], url: str, sha256: str, dest: str
) -> subprocess.CompletedProcess[str]:
    """`infopt artifact fetch` as the init container runs it (same image, user, read-only root, /tmp
    emptyDir), inside the running gateway container of a pod on the host network."""
    flags = [f"--env={key}={value}" for key, value in env.items()]
    command = ["podman", "exec", *flags, pod_container, "infopt", "artifact", "fetch", "--url", url]
    command += ["--sha256", sha256, "--dest", dest, "--timeout-s", "60"]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def _tree_in_pod(pod_container: str, folder: str) -> str:
    code = f"from infopt.hashing import tree_sha256; print(tree_sha256({folder!r}))"
    return _exec(pod_container, "python", "-c", code).stdout.strip()


def test_the_image_fetches_from_s3_with_boto3(dev_stack: StackRun, dev_plan: DevPlan) -> None:
    """The eks stacks' store: an s3:// bundle read with boto3 inside the image (moto's S3 API server on
    127.0.0.1 stands in for the bucket; the region/endpoint variables are the ones infra sets)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "eu-west-1",
            "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}",
        }
        client = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL_S3"],
            region_name="eu-west-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket="models", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        bundle = dev_plan.bundles / f"{dev_plan.sha256}.tar.gz"
        client.upload_file(str(bundle), "models", f"artifacts/{bundle.name}")
        client.put_object(Bucket="models", Key="artifacts/other.tar.gz", Body=bundle.read_bytes())
        gateway = dev_stack.pod("textcls-premium").container(GATEWAY_CONTAINER)
        fetched = _fetch_in_pod(gateway, env, f"s3://models/artifacts/{bundle.name}", dev_plan.sha256, "/tmp/s3/m")
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        assert _tree_in_pod(gateway, "/tmp/s3/m") == dev_plan.sha256
        refused = _fetch_in_pod(gateway, env, "s3://models/artifacts/other.tar.gz", "0" * 64, "/tmp/s3/x")
        assert refused.returncode == 1 and "does not match the manifest" in " ".join(refused.stdout.split())
        missing = _fetch_in_pod(gateway, env, "s3://models/artifacts/none.tar.gz", dev_plan.sha256, "/tmp/s3/y")
        assert missing.returncode == 1 and "S3 error 404" in " ".join(missing.stdout.split())
    finally:
        server.stop()


@pytest.mark.filterwarnings("ignore:Please install grpcio-status:ImportWarning")  # api_core's optional extra
def test_the_image_fetches_from_gcs_with_google_cloud_storage(
    dev_stack: StackRun, dev_plan: DevPlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gke stacks' store: a gs:// bundle read with google-cloud-storage inside the image
    (gcp-storage-emulator's GCS JSON API on 127.0.0.1 stands in for the bucket)."""
    from gcp_storage_emulator.server import create_server
    from google.cloud import storage

    server = create_server("127.0.0.1", 0, in_memory=True, default_bucket="models")
    server.start()
    try:
        port = server._api._httpd.server_address[1]  # the emulator binds port 0 and keeps the socket here
        endpoint = f"http://127.0.0.1:{port}"
        bundle = dev_plan.bundles / f"{dev_plan.sha256}.tar.gz"
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        storage.Client().bucket("models").blob(f"artifacts/{bundle.name}").upload_from_filename(str(bundle))
        gateway = dev_stack.pod("textcls-premium").container(GATEWAY_CONTAINER)
        env = {"STORAGE_EMULATOR_HOST": endpoint}
        fetched = _fetch_in_pod(gateway, env, f"gs://models/artifacts/{bundle.name}", dev_plan.sha256, "/tmp/gs/m")
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        assert _tree_in_pod(gateway, "/tmp/gs/m") == dev_plan.sha256
        missing = _fetch_in_pod(gateway, env, "gs://models/artifacts/none.tar.gz", dev_plan.sha256, "/tmp/gs/y")
        assert missing.returncode == 1 and "GCS error" in " ".join(missing.stdout.split())
    finally:
        server.stop()


def test_planned_probes_pass(dev_stack: StackRun) -> None:
    for pod in dev_stack.pods:
        assert probe(pod, GATEWAY_CONTAINER, "readinessProbe")
        assert probe(pod, GATEWAY_CONTAINER, "livenessProbe")
        ready = httpx.get(f"{pod.gateway_url}/v2/health/ready", timeout=10).json()
        assert ready["ready"] is True


def test_gateway_runs_non_root_read_only_without_capabilities_within_its_limits(dev_stack: StackRun) -> None:
    pod = dev_stack.pod("textcls-premium")
    name = pod.container(GATEWAY_CONTAINER)
    planned = pod.container_spec(GATEWAY_CONTAINER)
    status = _exec(name, "cat", "/proc/1/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Uid"].split()[:2] == ["10001", "10001"] and fields["Gid"].split()[0] == "10001"
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapPrm"], 16) == 0 and int(fields["CapBnd"], 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"  # a seccomp filter is active (the plan asks for RuntimeDefault)
    refused = _exec(name, "touch", "/opt/infopt/written")
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    assert _exec(name, "touch", "/tmp/written").returncode == 0  # the planned /tmp emptyDir
    config = _exec(name, "touch", "/etc/infopt/written")
    assert config.returncode != 0 and "Read-only file system" in config.stderr  # the config volume, read-only
    host = container_inspect(name)["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    limits = planned["resources"]["limits"]
    assert host["Memory"] == int(parse_quantity(limits["memory"])) == 2**30  # params: 1Gi
    assert host["CpuQuota"] / host["CpuPeriod"] == float(parse_quantity(limits["cpu"])) == 1.0


def test_each_pod_answers_its_own_tenants_only(dev_stack: StackRun) -> None:
    body = {"texts": ["the kernel compiles code", "atoms form molecules"]}
    premium, shared = dev_stack.pod("textcls-premium"), dev_stack.pod("textcls-shared")
    answer = httpx.post(f"{premium.gateway_url}/v1/classify", json=body, headers=_key("acme"), timeout=30)
    assert answer.status_code == 200, answer.text
    assert [r["label"] in LABELS for r in answer.json()["results"]] == [True, True]
    for tenant in ("globex", "initech"):
        assert (
            httpx.post(f"{shared.gateway_url}/v1/classify", json=body, headers=_key(tenant), timeout=30).status_code
            == 200
        )
    # The shared pod's params (its Secret) hold only globex's and initech's key hashes.
    assert (
        httpx.post(f"{shared.gateway_url}/v1/classify", json=body, headers=_key("acme"), timeout=30).status_code == 401
    )


def test_stock_tritonclient_infers_against_the_planned_pod(dev_stack: StackRun) -> None:
    import tritonclient.http as triton

    pod = dev_stack.pod("textcls-premium")
    client = triton.InferenceServerClient(url=pod.gateway_url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_model_ready("textcls-premium")
        ids = np.array([[2, 10, 11, 3], [2, 12, 3, 0]], dtype=np.int64)
        inputs = [
            triton.InferInput("input_ids", list(ids.shape), "INT64"),
            triton.InferInput("attention_mask", list(ids.shape), "INT64"),
        ]
        inputs[0].set_data_from_numpy(ids, binary_data=False)
        inputs[1].set_data_from_numpy((ids != 0).astype(np.int64), binary_data=False)
        outputs = [triton.InferRequestedOutput("logits", binary_data=False)]
        result = client.infer("textcls-premium", inputs, outputs=outputs, headers=_key("acme"))
        logits = result.as_numpy("logits")
        assert logits.shape == (2, len(LABELS)) and logits.dtype == np.float32
    finally:
        client.close()


def _raw_request(port: int, body: bytes, headers: dict[str, str]) -> tuple[socket.socket, bytes]:
    """Open a connection and send the request line, headers and the first half of the body."""
    head = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
    request = f"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}Content-Length: {len(body)}\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    half = len(body) // 2
    sock.sendall(request.encode() + body[:half])
    return sock, body[half:]


def _read_response(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
            None,
        )
        if length is not None and len(rest) >= length:
            break
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(rest)


def test_sigterm_drains_an_in_flight_request_and_exits_cleanly(dev_stack: StackRun) -> None:
    """SIGTERM inside the container (`podman stop`, as the kubelet does): the listener closes, the request
    already in flight is answered 200, and the gateway exits 0 well within the planned grace period.

    In flight by construction: the request's headers and half its body are sent first, and a complete
    request on a second connection is answered before the SIGTERM, so the server has parsed the first."""
    pod = dev_stack.pod("textcls-shared")
    name = pod.container(GATEWAY_CONTAINER)
    port = pod.ports[GATEWAY_CONTAINER]
    body = json.dumps({"texts": ["the manager schedules a meeting"]}).encode()
    sock, rest = _raw_request(port, body, {**_key("globex"), "Content-Type": "application/json"})
    try:
        assert httpx.get(f"{pod.gateway_url}/v2/health/live", timeout=10).status_code == 200
        grace = int(pod.spec["terminationGracePeriodSeconds"])
        stopper = threading.Thread(
            target=subprocess.run,
            args=(["podman", "stop", "--time", str(grace), name],),
            kwargs={"capture_output": True, "timeout": grace + STOP_TIMEOUT_S},
        )
        stopper.start()
        refused = False
        deadline = time.monotonic() + STOP_TIMEOUT_S  # podman delivers the SIGTERM within seconds
        while not refused and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                stopper.join(timeout=0.1)
            except OSError:
                refused = True
        assert refused, "the gateway kept accepting new connections after SIGTERM"
        sock.sendall(rest)
        status, answer = _read_response(sock)
    finally:
        sock.close()
    assert status == 200, answer
    assert answer["results"][0]["label"] in LABELS
    stopper.join(timeout=grace + STOP_TIMEOUT_S)
    state = container_state(name)
    assert state["Status"] == "exited" and state["ExitCode"] == 0, (state, logs(name)[-2000:])
    assert "Finished server process" in logs(name)


def test_a_tampered_artifact_keeps_the_pod_from_starting(
    dev_plan: DevPlan, session_images: SessionImages, tiny_model: Path, tmp_path: Path
) -> None:
    """A bundle named by the manifest's hash but holding other bytes: the init container refuses it and
    the gateway container is never started, so the readiness probe never passes."""
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_model, tampered)
    with (tampered / "tokenizer.json").open("a") as handle:
        handle.write(" ")
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    pack(tampered, tmp_path).rename(bundles / f"{dev_plan.sha256}.tar.gz")
    premium = [
        doc
        for doc in serving_documents(dev_plan.documents)
        if doc["metadata"]["name"] in ("textcls-premium", "textcls-premium-params", "textcls-premium-config")
    ]
    with run_stack(
        premium,
        artifact_base_url=dev_plan.stack.artifact_store.base_url,
        images=dev_plan.images(session_images),
        bundles=bundles,
        folder=tmp_path / "kube-play",
    ) as running:
        (pod,) = running.pods
        with pytest.raises(KubePlayError, match="init container fetch-artifact failed") as failure:
            wait_ready(pod, READY_TIMEOUT_S)
        message = " ".join(str(failure.value).split())  # the CLI's console wraps long lines
        assert f"does not match the manifest's {dev_plan.sha256}; refusing it" in message
        fetch = container_state(pod.container("fetch-artifact"))
        assert fetch["Status"] == "exited" and fetch["ExitCode"] == 1
        assert container_state(pod.container(GATEWAY_CONTAINER))["Status"] in ("created", "configured")
        assert not probe(pod, GATEWAY_CONTAINER, "readinessProbe")
        assert running.artifacts.fetched(f"{dev_plan.sha256}.tar.gz") == [200]
