"""The vllm-cpu image serves the tiny Llama, and an OpenAI request reaches it through the gateway-vllm image.

Both containers run with the plan's container securityContext (non-root 10001, read-only root file
system, every capability dropped, no privilege escalation: `run_flags`) on the host network, bound to
127.0.0.1, as the two containers of an `engine: vllm` pod: the gateway forwards to vLLM's loopback port.
The model folder is mounted read-only where the pod's init container would unpack it (/models/<variant>);
/dev/shm gets the size the dev stack plans for a vLLM pod's memory-backed /dev/shm (`vllmShmSize`).
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from harness.child_server import free_port
from harness.kube_play import logs, run_flags
from infopt.params import Deployment, load_params
from infopt.quantity import parse_quantity
from infra.serving_deployment import CONTAINER_SECURITY, POD_SECURITY
from infra.stack_config import load_stack_config, stack_file
from model_builds.tiny_llama import build_tiny_llama
from tests.serving_images.conftest import SessionImages

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = "chat-shared"
SERVED_MODEL = "tiny-llama"
VLLM_READY_TIMEOUT_S = 300.0  # vLLM's start in a container: 60-130 s measured on a loaded 2-core machine
GATEWAY_READY_TIMEOUT_S = 60.0

pytestmark = [pytest.mark.podman, pytest.mark.vllm, pytest.mark.slow]


def _readable(folder: Path) -> Path:
    """pytest's temporary folders are 0700 for root; the containers run as 10001."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def _wait_http(url: str, timeout_s: float, container: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        state = subprocess.run(
            ["podman", "container", "inspect", "--format", "{{.State.Status}}", container],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        if state != "running":
            raise AssertionError(f"{container} is {state!r}; log:\n{logs(container)[-3000:]}")
        time.sleep(1)
    raise AssertionError(f"{url} not ready within {timeout_s} s; {container} log:\n{logs(container)[-3000:]}")


class Pair:
    def __init__(self, gateway_url: str, gateway: str, vllm: str) -> None:
        self.gateway_url, self.gateway, self.vllm = gateway_url, gateway, vllm


@pytest.fixture(scope="module")
def pair(session_images: SessionImages, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    vllm_image, gateway_image = session_images.get("vllm-cpu"), session_images.get("gateway-vllm")
    folder = tmp_path_factory.mktemp("vllm-pair")
    model = _readable(build_tiny_llama(folder / "model"))
    params = load_params(ROOT / "params.yaml")
    chat = Deployment(name=DEPLOYMENT, variant=params.baseline.name, engine="vllm", tenants=["acme", "globex"])
    config = folder / "config"
    config.mkdir()
    YAML(typ="safe").dump(
        params.model_copy(update={"deployments": [*params.deployments, chat]}).model_dump(mode="json"),
        config / "params.yaml",
    )
    _readable(config)
    suffix = secrets.token_hex(3)
    vllm, gateway = f"infopt-test-vllm-{suffix}", f"infopt-test-gateway-vllm-{suffix}"
    vllm_port, gateway_port = free_port(), free_port()
    security = run_flags({**POD_SECURITY, **CONTAINER_SECURITY})
    shm_bytes = int(parse_quantity(load_stack_config(stack_file("dev", ROOT / "stacks")).vllm_shm_size))
    common = ["podman", "run", "--detach", "--network=host", *security]
    try:
        subprocess.run(
            [
                *common, "--name", vllm, f"--shm-size={shm_bytes}", "--env=VLLM_CPU_KVCACHE_SPACE=1",
                f"--volume={model}:/models/{SERVED_MODEL}:ro", vllm_image,
                # the pod's vllm args (infra/serving_deployment.py) plus loopback and the CPU-test settings
                "--model", f"/models/{SERVED_MODEL}", "--served-model-name", SERVED_MODEL,
                "--port", str(vllm_port), "--scheduling-policy", "priority", "--enable-prefix-caching",
                "--host", "127.0.0.1", "--max-model-len", "512", "--enforce-eager",
            ],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        subprocess.run(
            [
                *common, "--name", gateway, f"--volume={config}:/etc/infopt:ro", gateway_image,
                "serve", "--params", "/etc/infopt/params.yaml", "--deployment", DEPLOYMENT,
                "--vllm-url", f"http://127.0.0.1:{vllm_port}", "--vllm-model", SERVED_MODEL,
                "--host", "127.0.0.1", "--port", str(gateway_port),
            ],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        _wait_http(f"http://127.0.0.1:{vllm_port}/health", VLLM_READY_TIMEOUT_S, vllm)
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        _wait_http(f"{gateway_url}/v2/health/ready", GATEWAY_READY_TIMEOUT_S, gateway)
        yield Pair(gateway_url, gateway, vllm)
    finally:
        subprocess.run(["podman", "rm", "--force", "--volumes", gateway, vllm], capture_output=True, timeout=120)


def _completion_tokens(url: str, tenant: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "infopt_tenant_tokens_total" and sample.labels == {"tenant": tenant, "kind": "completion"}
    )


def test_openai_completion_through_the_gateway_image_is_served_by_the_vllm_image(pair: Pair) -> None:
    before = _completion_tokens(pair.gateway_url, "acme")
    body = {"model": DEPLOYMENT, "prompt": "A fortune for today:", "max_tokens": 5, "ignore_eos": True}
    response = httpx.post(
        f"{pair.gateway_url}/v1/completions", json=body, headers={"Authorization": "Bearer acme-demo-key"}, timeout=120
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == SERVED_MODEL and answer["usage"]["completion_tokens"] == 5
    assert _completion_tokens(pair.gateway_url, "acme") - before == 5
    refused = httpx.post(
        f"{pair.gateway_url}/v1/completions",
        json=body,
        headers={"Authorization": "Bearer initech-demo-key"},
        timeout=30,
    )
    assert refused.status_code == 401  # initech is not a tenant of this deployment


def test_both_containers_run_as_the_plan_declares(pair: Pair) -> None:
    for container in (pair.gateway, pair.vllm):
        status = subprocess.run(
            ["podman", "exec", container, "cat", "/proc/1/status"], capture_output=True, text=True, timeout=60
        ).stdout
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        assert fields["Uid"].split()[0] == "10001" and int(fields["CapEff"], 16) == 0, container
        assert fields["NoNewPrivs"].strip() == "1", container
        refused = subprocess.run(
            ["podman", "exec", container, "touch", "/written"], capture_output=True, text=True, timeout=60
        )
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr, container
