"""The metric names/labels contract, the gateway's CPU counter, and graceful shutdown over a real uvicorn server."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from infopt.params import BatchingParams
from serving.app import create_app
from serving.metrics import GatewayCpuCollector, ProcessKey
from tests.serving.gateway_kit import FakeEngine, auth, make_settings, serve, serve_in_thread, until

CONTRACT = {
    "request_queue_length": ("gauge", {"model", "sla_class"}),
    "infopt_queue_wait_seconds": ("histogram", {"model", "sla_class"}),
    "infopt_request_latency_seconds": ("histogram", {"model", "sla_class"}),
    "infopt_batch_size": ("histogram", {"model"}),
    "infopt_requests": ("counter", {"model", "tenant", "sla_class", "status"}),
    "infopt_rejections": ("counter", {"model", "tenant", "reason"}),
    "infopt_tenant_device_seconds": ("counter", {"tenant"}),
    "infopt_tenant_tokens": ("counter", {"tenant", "kind"}),
    "infopt_model_ready": ("gauge", {"model"}),
    "infopt_inflight_requests": ("gauge", {"model"}),
    "infopt_vllm_num_requests_waiting": ("gauge", {"model"}),
    "infopt_gateway_cpu_seconds": ("counter", {"model"}),
}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# psutil and /proc give the same clock ticks, summed in another order: floats that differ in the last bits
SLACK_S = 1e-6


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` from /proc/<pid>/stat (fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def gateway_cpu(text: str) -> dict[str, float]:
    """model -> infopt_gateway_cpu_seconds_total in a /metrics text."""
    families = {family.name: family for family in text_string_to_metric_families(text)}
    return {sample.labels["model"]: sample.value for sample in families["infopt_gateway_cpu_seconds"].samples}


async def test_metric_names_types_and_labels_are_the_contract(tiny_model: Path) -> None:
    async with serve(create_app(make_settings(tiny_model))) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.post("/v1/classify", headers=auth("acme"), json={"texts": ["a b"]})).status_code == 200
        assert (await client.post("/v1/classify", json={"texts": ["a"]})).status_code == 401
        text = (await client.get("/metrics")).text
    from serving.metrics import GatewayMetrics

    families = {family.name: family for family in text_string_to_metric_families(text)}
    registered = {m.name: m for m in GatewayMetrics("textcls").registry.collect()}
    for name, (kind, labels) in CONTRACT.items():
        assert registered[name].type == kind, name
        if name in families and families[name].samples:
            for sample in families[name].samples:
                assert set(sample.labels) - {"le"} == labels, (name, sample.labels)
    assert 'request_queue_length{model="textcls",sla_class="premium"} 0.0' in text
    assert 'infopt_requests_total{model="textcls",sla_class="premium",status="ok",tenant="acme"} 1.0' in text
    assert 'infopt_requests_total{model="textcls",sla_class="none",status="unauthorized",tenant="unknown"} 1.0' in text
    assert 'infopt_model_ready{model="textcls"} 1.0' in text
    assert 'infopt_batch_size_count{model="textcls"} 1.0' in text
    device = [s for s in families["infopt_tenant_device_seconds"].samples if s.labels["tenant"] == "acme"]
    assert device and device[0].value > 0
    assert families["process_cpu_seconds"].type == "counter"  # prometheus_client's process collector, beside ours


async def test_a_single_process_gateway_reports_its_cpu_rising_as_it_serves(tiny_model: Path) -> None:
    """The gateway runs in a thread of this process: its CPU counter is this process's CPU at the scrape,
    bracketed by /proc readings taken just before and after it."""
    me = os.getpid()
    async with serve(create_app(make_settings(tiny_model))) as url, httpx.AsyncClient(base_url=url) as client:
        low = proc_cpu_s(me)
        before = gateway_cpu((await client.get("/metrics")).text)
        high = proc_cpu_s(me)
        for _ in range(30):
            texts = [f"the saw cuts wood number {i}" for i in range(8)]  # max_batch_size rows
            response = await client.post("/v1/classify", headers=auth("acme"), json={"texts": texts})
            assert response.status_code == 200
        served_low = proc_cpu_s(me)
        after = gateway_cpu((await client.get("/metrics")).text)
        served_high = proc_cpu_s(me)
    assert set(before) == set(after) == {"textcls"}
    assert low - SLACK_S <= before["textcls"] <= high + SLACK_S
    assert served_low - SLACK_S <= after["textcls"] <= served_high + SLACK_S
    assert after["textcls"] > before["textcls"]


class CraftedProcesses:
    """What /proc says about each pid, set by the test: (identity, CPU seconds), or absent once it is gone."""

    def __init__(self) -> None:
        self.table: dict[int, tuple[ProcessKey, float]] = {}

    def set(self, pid: int, started: float, seconds: float) -> None:
        self.table[pid] = ((pid, started), seconds)

    def read(self, pid: int) -> tuple[ProcessKey, float] | None:
        return self.table.get(pid)


def test_gateway_cpu_keeps_the_seconds_of_workers_that_went_away() -> None:
    """A worker restarts, then its pid is handed to a new worker: the counter never drops, and a process that
    ended counts with its last reading (hand-checked sums below)."""
    procs, workers = CraftedProcesses(), [101, 102]
    collector = GatewayCpuCollector("textcls", read=procs.read)
    collector.follow(lambda: workers)
    registry = CollectorRegistry()
    registry.register(collector)

    def scrape() -> float | None:
        return registry.get_sample_value("infopt_gateway_cpu_seconds_total", {"model": "textcls"})

    me = os.getpid()
    procs.set(me, 1.0, 1.0)
    procs.set(101, 5.0, 2.0)
    procs.set(102, 6.0, 3.0)
    assert scrape() == 6.0  # 1 + 2 + 3
    procs.set(101, 5.0, 2.5)
    assert scrape() == 6.5  # 1 + 2.5 + 3
    del procs.table[101]  # worker 101 dies (2.5 s at its last reading) and is replaced by 103
    workers[:] = [102, 103]
    procs.set(me, 1.0, 1.5)
    procs.set(102, 6.0, 3.5)
    procs.set(103, 9.0, 0.5)
    assert scrape() == 8.0  # 1.5 + 3.5 + 0.5 + 2.5 kept from 101
    del procs.table[102]  # 102 dies; the kernel hands pid 102 to the next worker, started later
    procs.set(102, 12.0, 0.25)
    assert scrape() == 8.25  # 1.5 + 0.5 + 0.25 (the new 102) + 2.5 (old 101) + 3.5 (old 102)
    workers[:] = [102]  # 103's link closes and it is reaped: it keeps its 0.5
    del procs.table[103]
    assert scrape() == 8.25


async def test_sigterm_style_exit_finishes_in_flight_requests(tiny_model: Path) -> None:
    settings = make_settings(
        tiny_model, shutdown_grace_s=30.0, batching=BatchingParams(mode="dynamic", max_batch_size=2, max_wait_ms=1)
    )
    app = create_app(settings, engines=[FakeEngine(service_s=0.3)])
    gateway = app.state.gateway
    with serve_in_thread(app, grace_s=30.0) as (url, server):
        async with httpx.AsyncClient(base_url=url, headers=auth("initech"), timeout=60) as client:
            await until(lambda: gateway.service is not None)
            requests = [asyncio.create_task(client.post("/v1/classify", json={"texts": ["x"]})) for _ in range(6)]
            await until(lambda: gateway.inflight == 6)  # all six read by the server, none answered yet
            server.should_exit = True  # what uvicorn does on SIGTERM
            responses = await asyncio.gather(*requests)
        assert [r.status_code for r in responses] == [200] * 6  # 3 batches x 300 ms, all within the grace
        async with httpx.AsyncClient(base_url=url, timeout=2) as late:
            await asyncio.sleep(0.5)
            try:
                refused = (await late.get("/v2/health/live")).status_code
            except httpx.TransportError:
                refused = None
        assert refused is None  # the server is gone: nothing accepted after shutdown


async def test_drain_rejects_new_requests_then_fails_what_outlives_the_grace(tiny_model: Path) -> None:
    """Six requests, batches of two held by the engine: the batch running at drain time is let through after
    the drain began (it finishes within the grace); the next one is held past the grace and, with the queued
    pair, answered 503 shutting_down."""
    settings = make_settings(
        tiny_model, shutdown_grace_s=3.0, batching=BatchingParams(mode="dynamic", max_batch_size=2, max_wait_ms=2000)
    )
    engine = FakeEngine()
    engine.permits = threading.Semaphore(0)
    app = create_app(settings, engines=[engine])
    gateway = app.state.gateway
    try:
        async with serve(app) as url, httpx.AsyncClient(base_url=url, headers=auth("initech"), timeout=60) as client:
            requests = [asyncio.create_task(client.post("/v1/classify", json={"texts": ["x"]})) for _ in range(6)]
            await until(lambda: gateway.inflight == 6 and engine.batches)  # all six in, the first pair running
            drain = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(gateway.shutdown(), gateway.loop))
            await until(lambda: gateway.draining)
            late = await client.post("/v1/classify", json={"texts": ["late"]})
            engine.permits.release()  # the batch running at drain time ends, within the grace
            responses = await asyncio.gather(*requests)
            await drain
    finally:
        engine.permits.release(10)  # the held batch's thread ends too
    assert late.status_code == 503 and late.json()["code"] == "shutting_down" and "Retry-After" in late.headers
    codes = [(r.status_code, r.json().get("code")) for r in responses]
    assert codes.count((200, None)) == 2, codes  # the batch running at drain time finished within the grace
    assert codes.count((503, "shutting_down")) == 4, codes  # the rest was refused explicitly, not dropped
    text = gateway.metrics.render().decode()
    refused, served = codes.count((503, "shutting_down")), codes.count((200, None))
    prefix = 'infopt_requests_total{model="textcls",sla_class='
    assert f'{prefix}"batch",status="shutting_down",tenant="initech"}} {refused}.0' in text
    assert f'{prefix}"batch",status="ok",tenant="initech"}} {served}.0' in text
    assert f'{prefix}"none",status="shutting_down",tenant="unknown"}} 1.0' in text  # the late one: before auth


async def test_sigterm_with_a_batch_longer_than_the_grace_answers_503_shutting_down_not_500(tiny_model: Path) -> None:
    settings = make_settings(
        tiny_model, shutdown_grace_s=0.5, batching=BatchingParams(mode="dynamic", max_batch_size=1, max_wait_ms=1)
    )
    engine = FakeEngine()
    engine.permits = threading.Semaphore(0)  # the running batch is held until the answers are in: it outlives the grace
    app = create_app(settings, engines=[engine])
    gateway = app.state.gateway
    try:
        with serve_in_thread(app) as (url, server):
            async with httpx.AsyncClient(base_url=url, headers=auth("acme"), timeout=60) as client:
                await until(lambda: gateway.service is not None)
                requests = [asyncio.create_task(client.post("/v1/classify", json={"texts": ["x"]})) for _ in range(2)]
                await until(lambda: gateway.inflight == 2 and engine.batches)  # one running, one queued
                server.should_exit = True  # what uvicorn does on SIGTERM
                responses = await asyncio.gather(*requests)
                # answered while the first batch was still held (released only below): the grace ended it
                reached_the_engine = [size for size in engine.batches if size > 0]  # -1 marks the engine's close
    finally:
        engine.permits.release(10)
    assert reached_the_engine == [1]  # the queued request was refused, never run
    assert [(r.status_code, r.json()["code"]) for r in responses] == [(503, "shutting_down")] * 2
    assert all("Retry-After" in r.headers for r in responses)
    text = gateway.metrics.render().decode()
    assert 'infopt_requests_total{model="textcls",sla_class="premium",status="shutting_down",tenant="acme"} 2.0' in text
    assert 'status="ok"' not in text and 'status="internal_error"' not in text


async def test_inflight_and_queue_length_gauges_read_the_live_state_at_scrape_time(tiny_model: Path) -> None:
    settings = make_settings(tiny_model, batching=BatchingParams(mode="dynamic", max_batch_size=1, max_wait_ms=1))
    engine = FakeEngine(service_s=1.0)
    app = create_app(settings, engines=[engine])
    gateway = app.state.gateway
    async with serve(app) as url, httpx.AsyncClient(base_url=url, headers=auth("initech"), timeout=10) as client:
        requests = [asyncio.create_task(client.post("/v1/classify", json={"texts": ["x"]})) for _ in range(3)]
        await until(lambda: gateway.inflight == 3 and engine.batches)  # one row in the engine, two queued
        busy = (await client.get("/metrics")).text
        assert [r.status_code for r in await asyncio.gather(*requests)] == [200] * 3
        idle = (await client.get("/metrics")).text
    assert 'infopt_inflight_requests{model="textcls"} 3.0' in busy
    assert 'request_queue_length{model="textcls",sla_class="batch"} 2.0' in busy
    assert 'infopt_inflight_requests{model="textcls"} 0.0' in idle
    assert 'request_queue_length{model="textcls",sla_class="batch"} 0.0' in idle
