"""A real Prometheus (Debian's package) scraping a real gateway under a bounded load: the scaling node reads the
traffic through the HTTP API, and the prometheus-adapter rule from infra/ returns the series the HPA would see.

Needs the `prometheus` binary (scripts/setup_prometheus.sh). Everything binds 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.context import AgentContext, PrometheusTraffic
from agent.contract import NoChange, Recommendation
from agent.prometheus import (
    PrometheusClient,
    adapter_metrics_query,
    engine_seconds_query,
    frontend_cpu_from_prometheus,
    gateway_cpu_query,
    requests_rate_query,
    total_requests_query,
    traffic_from_prometheus,
)
from agent.scaling import ScalingOptions, inputs_for, run
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


@contextmanager
def running_prometheus(targets: dict[str, dict[str, str]], tmp_path: Path) -> Iterator[PrometheusClient]:
    """Debian's prometheus on 127.0.0.1:<free port>, scraping each target (host:port) every second with its
    static labels attached to every series."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus binary is missing: run `bash scripts/setup_prometheus.sh`")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: gateway\n    static_configs:\n"
        + "".join(
            f"      - targets: ['{target}']\n"
            + (f"        labels: {{{', '.join(f'{k}: {v}' for k, v in labels.items())}}}\n" if labels else "")
            for target, labels in targets.items()
        )
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


@pytest.fixture
def prometheus(gateway: tuple[str, GatedEngine], tmp_path: Path) -> Iterator[PrometheusClient]:
    # the labels the ServiceMonitor's Kubernetes service discovery attaches to every series
    labels = {"namespace": NAMESPACE, "pod": POD, "app_kubernetes_io_part_of": "infopt"}
    with running_prometheus({gateway[0].removeprefix("http://"): labels}, tmp_path) as client:
        yield client


def wait_for(check, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def engine_seconds(url: str) -> float:
    """The gateway's engine seconds so far, every tenant (its own /metrics)."""
    text = httpx.get(f"{url}/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    return sum(sample.value for sample in families["infopt_tenant_device_seconds"].samples)


def test_scaling_node_reads_gateway_traffic_from_a_real_prometheus(
    gateway: tuple[str, GatedEngine], prometheus: PrometheusClient
) -> None:
    url, _engine = gateway
    started = time.time()
    streams = [
        Stream("acme", KEYS["acme"], mode="open", rate_per_s=40, count=400, duration_s=12, sla_class="premium"),
        Stream("globex", KEYS["globex"], mode="open", rate_per_s=20, count=200, duration_s=12, sla_class="standard"),
    ]
    cpu_before, engine_before = own_cpu_s(), engine_seconds(url)
    report = asyncio.run(run_load(url, streams, model=MODEL, seed=3))
    # the gateway runs in a thread of this process, beside the load generator: this process's CPU is theirs
    front_end_s = (own_cpu_s() - cpu_before) - (engine_seconds(url) - engine_before)
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
        # scrapes missed on a loaded 2-core box allow: the gateway answers /metrics from a thread of this process,
        # beside the load generator, and a scrape that outlasts the 1 s interval leaves a gap no 5 s window spans
        # (seen: 52 % and 37 % of the count with the CPU fully shared). A trace in the wrong unit (per minute) or
        # on the wrong steps is off by far more; the class mix below holds the shape whatever the gaps.
        assert 0.25 * count <= integral <= 1.6 * count, (sla_class, integral, count)
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
        f'sum(rate(infopt_gateway_cpu_seconds_total{{model="{MODEL}"}}[5s]))',
        engine_seconds_query(MODEL, "5s"),
        total_requests_query(MODEL, "5s"),
    ]
    # The gateway exports infopt_gateway_cpu_seconds_total: the front end's CPU comes from Prometheus, not from the
    # committed file, and is near what this process spent outside the engine per request during the load: the
    # rates' extrapolation at the load's edges, scrapes missed while the box is saturated and the test's polling
    # after the load move the ratio, not its magnitude (seen: 1.8x at load average 1.9).
    inputs = inputs_for(context, MODEL)
    assert inputs.front_end is not None and inputs.front_end.source.startswith(f"Prometheus {prometheus.base_url}")
    assert not any("has no samples" in note for note in inputs.notes), inputs.notes
    measured = front_end_s / report.totals.sent
    assert measured / 4 <= inputs.front_end.seconds_per_request <= measured * 4, (inputs.front_end, measured)


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


class LinearExporter:
    """A scrape target whose counters grow at known constant rates (per second), so every rate Prometheus derives
    from them has a hand-checked value."""

    def __init__(self, model: str, rates: dict[str, float]) -> None:
        self.model, self.rates, self.started = model, rates, time.time()
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def render(self) -> str:
        elapsed = time.time() - self.started
        m, r = self.model, self.rates
        return (
            "# TYPE infopt_gateway_cpu_seconds_total counter\n"
            f'infopt_gateway_cpu_seconds_total{{model="{m}"}} {r["cpu"] * elapsed}\n'
            "# TYPE infopt_tenant_device_seconds_total counter\n"
            f'infopt_tenant_device_seconds_total{{tenant="acme"}} {r["engine"] * elapsed}\n'
            "# TYPE infopt_requests_total counter\n"
            f'infopt_requests_total{{model="{m}",tenant="acme",sla_class="premium",status="ok"}} {r["ok"] * elapsed}\n'
            f'infopt_requests_total{{model="{m}",tenant="acme",sla_class="premium",status="queue_full"}} '
            f"{r['refused'] * elapsed}\n"
            "# TYPE infopt_model_ready gauge\n"
            f'infopt_model_ready{{model="{m}"}} 1\n'
        )

    def __enter__(self) -> str:
        self.thread.start()
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def test_front_end_cpu_is_the_ratio_of_the_scraped_rates(tmp_path: Path) -> None:
    """Our gateway at 0.6 CPU-s/s with 0.2 s/s in its engine and 50 + 30 req/s: (0.6 - 0.2) / 80 = 5 ms per request.
    Another deployment's gateway, busier, shares the Prometheus: its CPU must not count."""
    ours = LinearExporter(MODEL, {"cpu": 0.6, "engine": 0.2, "ok": 50.0, "refused": 30.0})
    other = LinearExporter("textcls-shared", {"cpu": 5.0, "engine": 0.1, "ok": 10.0, "refused": 0.0})
    with ours as ours_target, other as other_target:
        with running_prometheus({ours_target: {}, other_target: {}}, tmp_path) as client:
            query = gateway_cpu_query(MODEL, "5s")

            def six_steps() -> bool:
                now = time.time()
                return sum(len(series.points) for series in client.query_range(query, now - 5, now, 1)) >= 6

            wait_for(six_steps, 30, "six steps of the CPU rate")
            found = frontend_cpu_from_prometheus(client, MODEL, window_s=5, step_s=1, rate_window="5s")
    assert found is not None
    assert found.seconds_per_request == pytest.approx(0.005, rel=0.03)
    assert [item.ref for item in found.evidence] == [
        f'sum(rate(infopt_gateway_cpu_seconds_total{{model="{MODEL}"}}[5s]))',
        f'sum(rate(infopt_tenant_device_seconds_total[5s]) and on(instance) infopt_model_ready{{model="{MODEL}"}})',
        f'sum(rate(infopt_requests_total{{model="{MODEL}"}}[5s]))',
    ]
    assert all(item.kind == "prometheus_query" for item in found.evidence)
