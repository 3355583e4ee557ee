"""A real Prometheus (Debian's package) scraping a real gateway under a bounded load: the scaling node reads the
traffic through the HTTP API, and the prometheus-adapter rule from infra/ returns the series the HPA would see.

Needs the `prometheus` binary (scripts/setup_prometheus.sh). Everything binds 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from agent.context import AgentContext, PrometheusTraffic
from agent.contract import NoChange, Recommendation
from agent.prometheus import PrometheusClient, adapter_metrics_query, requests_rate_query, traffic_from_prometheus
from agent.scaling import ScalingOptions, run
from harness.child_server import free_port
from harness.loadgen import Stream, run_load
from infopt.engines.factory import load_engine
from infra.metrics import adapter_rules
from serving.app import create_app
from tests.serving.gateway_kit import KEYS, SLA, auth, make_settings, serve_in_thread

ROOT = Path(__file__).resolve().parents[2]
MODEL = "textcls-premium"  # the gateway's `model` label is the deployment name
NAMESPACE, POD = "inference-acme", "textcls-premium-5d8f7c9b6-x2k4q"

pytestmark = pytest.mark.slow


class GatedEngine:
    """The real ONNX engine behind a gate the test can close, so a queue builds up deterministically."""

    def __init__(self, model_dir: Path) -> None:
        self.inner = load_engine("onnxruntime", model_dir, device="cpu", precision="fp32", threads=1)
        self.name, self.device = "onnxruntime", "cpu"
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()

    def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.entered.set()
        self.open.wait(timeout=60)
        return self.inner.infer(input_ids, attention_mask)

    def close(self) -> None:
        self.open.set()
        self.inner.close()


@pytest.fixture
def gateway(tiny_model: Path) -> Iterator[tuple[str, GatedEngine]]:
    engine = GatedEngine(tiny_model)
    # premium's deadline far away, so requests held behind the closed gate stay queued until the scrape
    classes = dict(SLA) | {"premium": SLA["premium"].model_copy(update={"timeout_ms": 60_000})}
    settings = replace(make_settings(tiny_model), model_name=MODEL, sla_classes=classes)
    with serve_in_thread(create_app(settings, engines=[engine])) as (url, _server):
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "gateway never became ready"
            time.sleep(0.05)
        yield url, engine


@pytest.fixture
def prometheus(gateway: tuple[str, GatedEngine], tmp_path: Path) -> Iterator[PrometheusClient]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus binary is missing: run `bash scripts/setup_prometheus.sh`")
    target = gateway[0].removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: gateway\n    static_configs:\n"
        f"      - targets: ['{target}']\n"
        # what the ServiceMonitor's Kubernetes service discovery attaches to every series
        f"        labels: {{namespace: {NAMESPACE}, pod: {POD}, app_kubernetes_io_part_of: infopt}}\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prometheus never became ready"
            time.sleep(0.2)
        client = PrometheusClient(url)
        yield client
        client.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def wait_for(check, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_scaling_node_reads_gateway_traffic_from_a_real_prometheus(
    gateway: tuple[str, GatedEngine], prometheus: PrometheusClient
) -> None:
    url, _engine = gateway
    started = time.time()
    streams = [
        Stream("acme", KEYS["acme"], mode="open", rate_per_s=40, count=400, duration_s=12, sla_class="premium"),
        Stream("globex", KEYS["globex"], mode="open", rate_per_s=20, count=200, duration_s=12, sla_class="standard"),
    ]
    report = asyncio.run(run_load(url, streams, model=MODEL, seed=3))
    sent = {stream.sla_class: stream.ok for stream in report.streams}
    assert report.totals.errors == 0 and sent["premium"] > 300 and sent["standard"] > 150

    def scraped() -> bool:
        totals = prometheus.query(f'sum(infopt_requests_total{{model="{MODEL}",status="ok"}}) by (sla_class)')
        return {s.labels["sla_class"]: s.points[0][1] for s in totals} == {k: float(v) for k, v in sent.items()}

    wait_for(scraped, 30, "Prometheus to scrape the final request counts")
    end = time.time() + 2
    trace = traffic_from_prometheus(prometheus, MODEL, window_s=end - started + 10, step_s=1, rate_window="5s", end=end)
    for sla_class, count in sent.items():
        integral = sum(step.get(sla_class, 0.0) for step in trace.rates) * trace.step_s
        # The rate series integrates to the count, within what rate()'s extrapolation at the series' edges and
        # scrapes delayed on a loaded 2-core box allow (seen: 52 % of the count with the CPU fully shared).
        assert integral == pytest.approx(count, rel=0.6), (sla_class, integral, count)
    mix = trace.mix()
    assert mix["premium"] == pytest.approx(2 / 3, abs=0.08)
    assert max(step.get("premium", 0.0) for step in trace.rates) == pytest.approx(40, rel=0.5)
    assert trace.evidence[0].ref == requests_rate_query(MODEL, "5s")

    context = AgentContext.load(
        ROOT,
        manifest_path=ROOT / "tests" / "fixtures" / "manifest.json",
        traffic=PrometheusTraffic(prometheus, window_s=end - started + 10, step_s=1, rate_window="5s", end=end),
        deployments=[MODEL],
    )
    (outcome,) = run(context, ScalingOptions(arrivals_per_probe=5000))
    assert isinstance(outcome, Recommendation | NoChange)
    queries = [item.ref for item in outcome.evidence if item.kind == "prometheus_query"]
    assert queries == [
        f'sum(rate(infopt_requests_total{{model="{MODEL}"}}[5s])) by (sla_class)',
        f'sum(request_queue_length{{model="{MODEL}"}}) by (sla_class)',
    ]


def test_adapter_rule_returns_the_queue_the_hpa_would_see(
    gateway: tuple[str, GatedEngine], prometheus: PrometheusClient
) -> None:
    url, engine = gateway
    rule = next(r for r in adapter_rules() if r["name"]["as"] == "request_queue_length")

    engine.open.clear()
    engine.entered.clear()
    body = {"texts": ["the kernel compiles the code"]}

    async def hold_queue() -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            first = asyncio.create_task(client.post("/v1/classify", json=body, headers=auth("acme")))
            await asyncio.to_thread(engine.entered.wait, 30)  # the only replica is now busy with request 1
            rest = [asyncio.create_task(client.post("/v1/classify", json=body, headers=auth("acme"))) for _ in range(5)]

            def queued() -> bool:
                metrics = httpx.get(f"{url}/metrics").text
                return f'request_queue_length{{model="{MODEL}",sla_class="premium"}} 5.0' in metrics

            await asyncio.to_thread(wait_for, queued, 30, "5 requests queued in the gateway")
            query = adapter_metrics_query(rule, namespace=NAMESPACE, pods=[POD])
            seen = await asyncio.to_thread(
                wait_for, lambda: [s for s in prometheus.query(query) if s.points[0][1] == 5.0], 30, "the scrape"
            )
            assert [s.labels for s in seen] == [{"pod": POD}]
            series = prometheus.series(rule["seriesQuery"])
            assert {(s["namespace"], s["pod"], s["sla_class"]) for s in series} >= {(NAMESPACE, POD, "premium")}
            engine.open.set()
            responses = [await task for task in [first, *rest]]
            return [response.status_code for response in responses]

    # The rule selects the gateways by the label the ServiceMonitor copies from their Service (targetLabels).
    assert (
        rule["seriesQuery"].startswith("request_queue_length{")
        and 'app_kubernetes_io_part_of="infopt"' in rule["seriesQuery"]
    )
    assert asyncio.run(hold_queue()) == [200] * 6
