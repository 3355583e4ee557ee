"""The multi-process gateway (serving.workers >= 2) on 127.0.0.1: real HTTP worker processes in front of the
admission process (in this test process, with a fake engine), bounded traffic.

Admission stays exact across workers: one bucket per tenant whatever the worker, premium rows dequeued
before batch rows from any worker, deadlines from arrival; the counters equal the requests sent and the
in-flight gauge is the workers' sum at scrape time; readiness follows the engine; the drain answers what
outlives the grace 503 shutting_down; a killed worker is replaced (a crash loop stops the gateway); the
pre-auth limits hold per worker. Synchronisation is on server state (queue length, links, engine gate),
never on sleeps.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import serving.admission
from infopt.params import BatchingParams, SlaClass
from serving.app import estimate_prompt_tokens
from serving.codec import Codec
from serving.timing import parse_gateway_ms
from tests.serving.gateway_kit import (
    SLA,
    TENANTS,
    FakeEngine,
    auth,
    make_settings,
    serve_workers,
    tenant,
    until,
)
from tests.serving.test_metrics_and_shutdown import SLACK_S, gateway_cpu, proc_cpu_s
from tests.serving.test_server import exchange, status_and_body
from tests.serving.vllm_fixtures import SERVED_MODEL, FakeUpstream

ONE_AT_A_TIME = BatchingParams(mode="dynamic", max_batch_size=1, max_wait_ms=1)
PATIENT = dict(  # deadlines far beyond any wait of these tests, unless a test shortens one
    SLA,
    premium=SlaClass(p99_ms=150, timeout_ms=60_000, priority=0, weight=8, k8s_priority_value=100000),
    batch=SlaClass(p99_ms=None, timeout_ms=60_000, priority=2, weight=1, k8s_priority_value=1000),
)
FRESH = httpx.Limits(max_keepalive_connections=0)  # a new connection per request: the kernel spreads them
MAX_SPREAD_REQUESTS = 40  # new connections that all hash to one of two workers: 1 time in 2**39


@pytest.fixture(autouse=True)
def _patient_scrapes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scrape here waits for every worker's counts (the admission process runs in this test process): the
    2 s a production scrape allows a stuck worker would, on a stalled box, drop a worker's counts from the
    exact sums these tests assert."""
    monkeypatch.setattr(serving.admission, "SYNC_TIMEOUT_S", 60.0)


class GatedEngine(FakeEngine):
    """Records the first token of every row it runs, and holds every batch until `gate` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.order: list[int] = []

    def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.order.extend(input_ids[:, 1].tolist())
        assert self.gate.wait(timeout=120), "the test never opened the gate"
        return super().infer(input_ids, attention_mask)


def metric_lines(text: str, prefix: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    }


def requests_total(text: str) -> dict[tuple[str, str], float]:
    """(tenant, status) -> count from infopt_requests_total."""
    totals: dict[tuple[str, str], float] = {}
    for key, value in metric_lines(text, "infopt_requests_total{").items():
        labels = dict(part.split("=", 1) for part in key[key.index("{") + 1 : -1].split(","))
        totals[(labels["tenant"].strip('"'), labels["status"].strip('"'))] = value
    return totals


def children_of(pid: int) -> list[int]:
    """The live child processes of `pid`, from /proc (field 4 of /proc/<pid>/stat is the parent)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # it exited meanwhile
            if fields[1] == str(pid) and fields[0] != "Z":
                children.append(int(entry.name))
    return children


def first_token(tiny_model: Path, word: str) -> int:
    rows, _ = Codec(tiny_model, 32).encode([word])
    return int(rows[0][0][1])


@pytest.mark.parametrize("charge", ["requests", "rows"])
async def test_a_tenant_bucket_is_one_bucket_whatever_worker_takes_the_request(tiny_model: Path, charge: str) -> None:
    burst = 10
    tenants = (tenant("acme", "premium"), tenant("initech", "batch", rate=0.01, burst=burst, charge=charge))
    settings = make_settings(tiny_model, tenants=tenants)
    with serve_workers(settings, workers=3, engines=[FakeEngine()]) as (url, supervisor):
        async with httpx.AsyncClient(base_url=url, headers=auth("initech"), timeout=60, limits=FRESH) as client:
            # One at a time first, each on a new connection (the kernel picks a worker per connection), so the
            # admitted ones spread over the workers however the box schedules them; then a concurrent burst
            # that the one shared bucket must refuse whole.
            responses = [await client.post("/v1/classify", json={"texts": ["x"]}) for _ in range(burst + 2)]
            responses += await asyncio.gather(
                *(client.post("/v1/classify", json={"texts": ["x"]}) for _ in range(40 - burst - 2))
            )
            metrics = (await client.get("/metrics")).text
        spread = [link.served for link in supervisor.admission.links]
    codes = [response.status_code for response in responses]
    assert codes.count(200) == burst and codes.count(429) == 40 - burst  # 3 workers, one bucket of 10
    refused = [response for response in responses if response.status_code == 429]
    assert all(r.json()["code"] == "rate_limited" and "Retry-After" in r.headers for r in refused)
    assert sum(1 for served in spread if served) >= 2, spread  # the admitted ones came through several workers
    totals = requests_total(metrics)
    assert totals[("initech", "ok")] == burst and totals[("initech", "rate_limited")] == 40 - burst


async def test_premium_rows_from_any_worker_are_dequeued_before_batch_rows(tiny_model: Path) -> None:
    engine = GatedEngine()
    settings = make_settings(tiny_model, sla_classes=PATIENT, batching=ONE_AT_A_TIME)
    premium_id, batch_id, blocker_id = (first_token(tiny_model, word) for word in ("kernel", "lab", "disk"))
    with serve_workers(settings, workers=3, engines=[engine]) as (url, supervisor):
        queue = supervisor.admission.service.queue
        async with (
            httpx.AsyncClient(base_url=url, headers=auth("acme"), timeout=60, limits=FRESH) as premium,
            httpx.AsyncClient(base_url=url, headers=auth("initech"), timeout=60, limits=FRESH) as batch,
        ):
            blocker = asyncio.create_task(batch.post("/v1/classify", json={"texts": ["disk"]}))
            await until(lambda: engine.order == [blocker_id])  # the engine is busy with the blocker
            sent = [asyncio.create_task(batch.post("/v1/classify", json={"texts": ["lab"]})) for _ in range(4)]
            await until(lambda: queue.size("batch") == 4)  # batch rows queued first, from several workers
            sent += [asyncio.create_task(premium.post("/v1/classify", json={"texts": ["kernel"]})) for _ in range(4)]
            await until(lambda: queue.size("premium") == 4)
            engine.gate.set()
            responses = await asyncio.gather(blocker, *sent)
    assert [response.status_code for response in responses] == [200] * 9
    assert engine.order == [blocker_id] + [premium_id] * 4 + [batch_id] * 4  # weights 8:1, premium first


async def test_a_deadline_counts_from_arrival_and_expires_the_row_in_the_shared_queue(tiny_model: Path) -> None:
    engine = GatedEngine()
    short = dict(PATIENT, premium=SlaClass(p99_ms=150, timeout_ms=800, priority=0, weight=8, k8s_priority_value=1))
    settings = make_settings(tiny_model, sla_classes=short, batching=ONE_AT_A_TIME)
    with serve_workers(settings, workers=2, engines=[engine]) as (url, supervisor):
        queue = supervisor.admission.service.queue
        async with (
            httpx.AsyncClient(base_url=url, headers=auth("acme"), timeout=60) as premium,
            httpx.AsyncClient(base_url=url, headers=auth("initech"), timeout=60) as batch,
        ):
            blocker = asyncio.create_task(batch.post("/v1/classify", json={"texts": ["disk"]}))
            await until(lambda: len(engine.order) == 1)
            loop = asyncio.get_running_loop()
            began = loop.time()
            late = await premium.post("/v1/classify", json={"texts": ["kernel"]})
            waited = loop.time() - began
            # The worker answers at the deadline on its own clock; the admission process drops the expired row
            # on its timer a moment later. The engine is still held, so it never sees the row.
            await until(lambda: len(queue) == 0)
            engine.gate.set()
            assert (await blocker).status_code == 200
            metrics = (await premium.get("/metrics")).text
    assert late.status_code == 503 and late.json()["code"] == "deadline_exceeded" and "Retry-After" in late.headers
    assert 0.8 <= waited < 30  # not before the 800 ms deadline; the engine was held until after the answer
    assert len(engine.order) == 1
    assert requests_total(metrics)[("acme", "deadline_exceeded")] == 1


async def test_counters_equal_the_requests_sent_and_gauges_are_the_live_sum_at_scrape_time(tiny_model: Path) -> None:
    engine = GatedEngine()
    settings = make_settings(tiny_model, sla_classes=PATIENT, batching=ONE_AT_A_TIME)
    with serve_workers(settings, workers=3, engines=[engine]) as (url, supervisor):
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=FRESH) as client:
            held = [
                asyncio.create_task(client.post("/v1/classify", headers=auth("initech"), json={"texts": ["x"]}))
                for _ in range(3)
            ]
            await until(lambda: len(engine.order) == 1 and len(supervisor.admission.service.queue) == 2)
            busy = (await client.get("/metrics")).text
            engine.gate.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [200] * 3
            outcomes = await asyncio.gather(
                *(client.post("/v1/classify", headers=auth("acme"), json={"texts": ["a b"]}) for _ in range(7)),
                *(client.post("/v1/classify", headers={"x-api-key": "wrong"}, json={"texts": ["a"]}) for _ in range(4)),
                *(
                    client.post("/v1/classify", headers={**auth("globex"), "content-type": "text/plain"}, content="x")
                    for _ in range(2)
                ),
                *(client.post("/v1/classify", headers=auth("globex"), json={"texts": []}) for _ in range(3)),
            )
            idle = (await client.get("/metrics")).text
    assert [r.status_code for r in outcomes] == [200] * 7 + [401] * 4 + [415] * 2 + [422] * 3
    assert all(parse_gateway_ms(r.headers.get("server-timing")) is not None for r in outcomes)  # every worker
    assert metric_lines(busy, "infopt_inflight_requests{") == {'infopt_inflight_requests{model="textcls"}': 3.0}
    assert 'request_queue_length{model="textcls",sla_class="batch"} 2.0' in busy
    assert metric_lines(idle, "infopt_inflight_requests{") == {'infopt_inflight_requests{model="textcls"}': 0.0}
    assert requests_total(idle) == {
        ("initech", "ok"): 3,
        ("acme", "ok"): 7,
        ("unknown", "unauthorized"): 4,
        ("globex", "bad_request"): 5,
    }
    assert 'infopt_rejections_total{model="textcls",reason="unsupported_media_type",tenant="globex"} 2.0' in idle
    assert 'infopt_batch_size_count{model="textcls"} 10.0' in idle  # one row a batch: 3 + 7


async def test_readiness_follows_the_engine_through_every_worker(tiny_model: Path) -> None:
    engine = FakeEngine()
    settings = make_settings(tiny_model, batching=ONE_AT_A_TIME, health_probe_interval_s=0.2)
    with serve_workers(settings, workers=2, engines=[engine]) as (url, supervisor):
        batcher = supervisor.admission.service.batcher
        async with httpx.AsyncClient(base_url=url, headers=auth("initech"), timeout=60, limits=FRESH) as client:
            engine.failing.set()
            failed = [await client.post("/v1/classify", json={"texts": ["x"]}) for _ in range(3)]
            await until(lambda: batcher.healthy_count == 0)
            out = [await client.get("/v2/health/ready") for _ in range(6)]  # fresh connections: both workers
            engine.failing.clear()
            await until(lambda: batcher.healthy_count == 1)  # the probe found valid output
            back = [await client.get("/v2/health/ready") for _ in range(6)]
    assert all(r.status_code == 503 and r.json()["code"] == "engine_unavailable" for r in failed)
    assert all(r.status_code == 503 and "no healthy engine replica" in r.json()["reason"] for r in out)
    assert all(r.status_code == 200 and r.json() == {"ready": True} for r in back)


async def test_a_corrupt_model_is_named_on_ready_by_the_workers(tiny_model: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_model, corrupt)
    (corrupt / "model.onnx").write_bytes(b"not a protobuf at all" * 50)
    with serve_workers(make_settings(corrupt), workers=2, engines=None, ready=False) as (url, supervisor):
        await until(lambda: supervisor.admission.load_error is not None)
        async with httpx.AsyncClient(base_url=url, headers=auth("acme"), timeout=60, limits=FRESH) as client:
            ready = [await client.get("/v2/health/ready") for _ in range(4)]
            refused = await client.post("/v1/classify", json={"texts": ["a"]})
    for response in ready:
        assert response.status_code == 503 and "failed to load" in response.json()["reason"]
        assert "INVALID_PROTOBUF" in response.json()["reason"]
    assert refused.status_code == 503 and "failed to load" in refused.json()["error"]


async def test_the_drain_answers_what_outlives_the_grace_503_shutting_down(tiny_model: Path) -> None:
    engine = GatedEngine()  # opened only after the drain: the running batch outlives the grace
    settings = make_settings(tiny_model, sla_classes=PATIENT, batching=ONE_AT_A_TIME, shutdown_grace_s=0.6)
    try:
        with serve_workers(settings, workers=2, engines=[engine]) as (url, supervisor):
            async with httpx.AsyncClient(base_url=url, headers=auth("acme"), timeout=60, limits=FRESH) as client:
                held = [asyncio.create_task(client.post("/v1/classify", json={"texts": ["x"]})) for _ in range(3)]
                await until(lambda: len(engine.order) == 1 and len(supervisor.admission.service.queue) == 2)
                loop = asyncio.get_running_loop()
                began = loop.time()
                supervisor.stop()  # what SIGTERM does
                responses = await asyncio.gather(*held)
                answered_after = loop.time() - began
                await until(lambda: all(w.exited.is_set() for w in supervisor.workers.values()))
                with pytest.raises(httpx.ConnectError):
                    await client.get("/v2/health/live")  # nothing accepts after the shutdown
    finally:
        engine.gate.set()
    text = supervisor.admission.metrics.render().decode()  # the supervisor has ended: every DONE is in
    assert [(r.status_code, r.json()["code"]) for r in responses] == [(503, "shutting_down")] * 3
    assert all("Retry-After" in r.headers for r in responses)
    assert 0.6 <= answered_after < 20  # after the grace, while the batch still ran
    assert requests_total(text) == {("acme", "shutting_down"): 3}
    assert supervisor.exit_code == 0 and supervisor.restarts == 0


async def test_requests_in_flight_at_sigterm_finish_within_the_grace(tiny_model: Path) -> None:
    engine = GatedEngine()
    settings = make_settings(tiny_model, sla_classes=PATIENT, batching=ONE_AT_A_TIME, shutdown_grace_s=30)
    with serve_workers(settings, workers=2, engines=[engine]) as (url, supervisor):
        async with httpx.AsyncClient(base_url=url, headers=auth("acme"), timeout=60, limits=FRESH) as client:
            held = [asyncio.create_task(client.post("/v1/classify", json={"texts": ["x"]})) for _ in range(3)]
            await until(lambda: len(engine.order) == 1 and len(supervisor.admission.service.queue) == 2)
            supervisor.stop()
            refused = False
            for _ in range(300):  # until every worker closed its socket (bounded: 300 new connections)
                try:
                    await client.get("/v2/health/live")
                except httpx.ConnectError:
                    refused = True  # no listening socket is left
                    break
                except httpx.TransportError:
                    continue  # reset in the backlog of a socket being closed: another may still listen
            assert refused, "the workers kept accepting after SIGTERM"
            engine.gate.set()
            responses = await asyncio.gather(*held)
    assert [r.status_code for r in responses] == [200] * 3  # in flight at SIGTERM, finished within the grace
    assert requests_total(supervisor.admission.metrics.render().decode()) == {("acme", "ok"): 3}


async def test_a_killed_worker_is_replaced_and_its_lost_request_counted(tiny_model: Path) -> None:
    engine = GatedEngine()
    settings = make_settings(tiny_model, sla_classes=PATIENT, batching=ONE_AT_A_TIME)
    with serve_workers(settings, workers=2, engines=[engine]) as (url, supervisor):
        admission = supervisor.admission
        async with httpx.AsyncClient(base_url=url, headers=auth("acme"), timeout=60, limits=FRESH) as client:
            doomed = asyncio.create_task(client.post("/v1/classify", json={"texts": ["x"]}))
            await until(lambda: len(engine.order) == 1)
            (victim,) = [link for link in admission.links if link.requests]
            pid = supervisor.workers[victim.index].process.pid
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(httpx.TransportError):
                await doomed  # its connection died with it
            await until(
                lambda: (
                    supervisor.restarts == 1
                    and sum(1 for link in admission.links if link.pid is not None) == 2
                    and supervisor.workers[victim.index].process.pid != pid
                ),
                timeout_s=120,
            )
            engine.gate.set()
            after = [await client.post("/v1/classify", json={"texts": ["x"]}) for _ in range(24)]
            ready = await client.get("/v2/health/ready")
            metrics = (await client.get("/metrics")).text
        replacement = next(link for link in admission.links if link.index == victim.index)
    assert [r.status_code for r in after] == [200] * 24 and ready.status_code == 200
    assert supervisor.exits[0][0] == victim.index and supervisor.exits[0][1] == -signal.SIGKILL
    assert replacement.served >= 1  # the new worker serves its socket's connections
    totals = requests_total(metrics)
    assert totals == {("acme", "internal_error"): 1, ("acme", "ok"): 24}
    assert 'infopt_rejections_total{model="textcls",reason="worker_lost",tenant="acme"} 1.0' in metrics


def processes_cpu_s(pids: list[int]) -> float:
    return sum(proc_cpu_s(pid) for pid in pids)


async def test_gateway_cpu_is_every_process_and_keeps_a_replaced_workers_seconds(tiny_model: Path) -> None:
    """infopt_gateway_cpu_seconds_total is the admission process's CPU (this test process: it runs in a thread
    here) plus every worker's, bracketed by /proc readings taken just before and after the scrape; after a
    worker is killed and replaced, the counter still holds the dead worker's seconds."""
    settings = make_settings(tiny_model)
    with serve_workers(settings, workers=2, engines=[FakeEngine()]) as (url, supervisor):
        admission = supervisor.admission

        def pids() -> list[int]:
            return [os.getpid(), *(link.pid for link in admission.links if link.pid is not None)]

        async with httpx.AsyncClient(base_url=url, headers=auth("acme"), timeout=60, limits=FRESH) as client:
            texts = [f"the saw cuts wood number {i}" for i in range(8)]
            responses = [await client.post("/v1/classify", json={"texts": texts}) for _ in range(40)]
            assert [r.status_code for r in responses] == [200] * 40
            before = pids()
            assert len(before) == 3 and all(link.served for link in admission.links)  # both workers served
            low = {pid: proc_cpu_s(pid) for pid in before}
            scraped = gateway_cpu((await client.get("/metrics")).text)["textcls"]
            high = processes_cpu_s(before)
            assert sum(low.values()) - SLACK_S <= scraped <= high + SLACK_S, (low, scraped, high)
            # the workers' CPU is in it
            assert scraped - low[os.getpid()] >= sum(low[pid] for pid in before[1:]) - SLACK_S

            victim = before[1]
            os.kill(victim, signal.SIGKILL)
            await until(lambda: supervisor.restarts == 1 and len(pids()) == 3 and victim not in pids(), timeout_s=120)
            now = pids()
            later_low = processes_cpu_s(now)
            later = gateway_cpu((await client.get("/metrics")).text)["textcls"]
    # the killed worker's seconds (at least what it had before the first scrape) are still counted
    assert later >= later_low + low[victim] - SLACK_S, (later, later_low, low[victim])
    assert later >= scraped


async def test_a_crash_loop_stops_the_gateway_with_status_1(tiny_model: Path) -> None:
    settings = make_settings(tiny_model)
    with serve_workers(settings, workers=2, engines=[FakeEngine()]) as (_url, supervisor):
        supervisor.max_restarts = 0  # the first unexpected exit is already too many
        os.kill(supervisor.workers[1].process.pid, signal.SIGKILL)
        await until(lambda: supervisor.stopping and all(w.exited.is_set() for w in supervisor.workers.values()))
        assert supervisor.restarts == 0
    assert supervisor.exit_code == 1


def _read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (headers, then Content-Length bytes of body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _held_connection_status(port: int) -> int | None:
    """Open a connection and keep it, silent: a worker at its limit answers 503 at once, unasked; one with
    room says nothing (None) and holds it (a request on it would start uvicorn's keep-alive timer after the
    answer, and the worker would close it). The socket stays open until the test ends."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    HELD.append(sock)
    sock.settimeout(10.0)  # generous: a refusal is written as the connection is accepted
    try:
        return status_and_body(_read_response(sock))[0]
    except TimeoutError:
        return None


HELD: list[socket.socket] = []


async def test_the_connection_limit_holds_per_worker(tiny_model: Path) -> None:
    settings = make_settings(tiny_model, max_connections=1, header_timeout_s=60)
    with serve_workers(settings, workers=2, engines=[FakeEngine()]) as (url, supervisor):
        try:
            statuses = [await asyncio.to_thread(_held_connection_status, supervisor.port) for _ in range(6)]
        finally:
            for sock in HELD:
                sock.close()
            HELD.clear()
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            metrics = (await client.get("/metrics")).text
    accepted = statuses.count(None)
    assert 1 <= accepted <= 2 and statuses.count(503) == 6 - accepted, statuses  # 2 workers x max_connections 1
    assert requests_total(metrics)[("unknown", "overloaded")] == 6 - accepted


async def test_header_limits_hold_in_every_worker_and_are_counted_once(tiny_model: Path) -> None:
    settings = make_settings(tiny_model, max_header_bytes=2048)
    with serve_workers(settings, workers=2, engines=[FakeEngine()]) as (url, supervisor):
        large = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n"
        big = [status_and_body(await asyncio.to_thread(exchange, supervisor.port, large)) for _ in range(6)]
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            metrics = (await client.get("/metrics")).text
    assert all(status == 431 and body["code"] == "header_too_large" for status, body in big)
    assert requests_total(metrics)[("unknown", "bad_request")] == 6
    assert 'infopt_rejections_total{model="textcls",reason="header_too_large",tenant="unknown"} 6.0' in metrics


@contextmanager
def upstream_in_thread() -> Iterator[tuple[FakeUpstream, asyncio.AbstractEventLoop]]:
    """A fake vLLM (OpenAI) upstream on 127.0.0.1 on its own loop and thread: the test's loop blocks while
    serve_workers waits for readiness, and the workers probe this upstream's /health meanwhile."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    upstream = asyncio.run_coroutine_threadsafe(FakeUpstream("fake-vllm").start(), loop).result(timeout=30)
    try:
        yield upstream, loop
    finally:
        asyncio.run_coroutine_threadsafe(upstream.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def vllm_settings(tiny_model: Path, upstream: FakeUpstream, tenants: tuple[Any, ...]) -> Any:
    return make_settings(
        tiny_model, engine="vllm", vllm_urls=(upstream.url,), vllm_model=SERVED_MODEL, tenants=tenants, labels=()
    )


def token_samples(text: str, tenant_name: str) -> dict[str, float]:
    """kind -> infopt_tenant_tokens_total of one tenant."""
    found = {}
    for key, value in metric_lines(text, "infopt_tenant_tokens_total{").items():
        if f'tenant="{tenant_name}"' in key:
            found[key.split('kind="')[1].split('"')[0]] = value
    return found


async def test_a_vllm_tokens_per_minute_bucket_is_one_bucket_across_workers(tiny_model: Path) -> None:
    # 60 tokens a minute (capacity 60, refill one a second). Each prompt is estimated at 20 tokens (64 chars:
    # 64 // 4 + 4), so the bucket admits exactly 3 while no usage has come back (the upstream holds every
    # answer until all were decided); a 4th would need 20 s of refill. Then the real usage (3 prompt +
    # 2 completion tokens each, from the fake upstream) is counted once per answered request.
    prompt = "p" * 64
    body = {"model": "textcls", "prompt": prompt, "max_tokens": 2}
    assert estimate_prompt_tokens(body) == 20
    tenants = (tenant("acme", "premium"), tenant("initech", "batch", tpm=60))
    with upstream_in_thread() as (upstream, upstream_loop):
        upstream.hold = asyncio.Event()
        settings = vllm_settings(tiny_model, upstream, tenants)
        with serve_workers(settings, workers=2) as (url, supervisor):
            async with httpx.AsyncClient(base_url=url, headers=auth("initech"), timeout=60, limits=FRESH) as client:
                tasks = [asyncio.ensure_future(client.post("/v1/completions", json=body)) for _ in range(12)]
                # every admission decided: the admitted ones are held at the upstream, the others answered
                await until(lambda: len(upstream.bodies) + sum(task.done() for task in tasks) == len(tasks))
                # All 12 new connections hash to one worker (SO_REUSEPORT) 1 time in 2**11: then more are sent,
                # one by one while the upstream still holds the admitted ones (refused: the bucket is empty),
                # until the other worker has decided one too.
                while sum(1 for link in supervisor.admission.links if link.served) < 2:
                    assert len(tasks) < MAX_SPREAD_REQUESTS, [link.served for link in supervisor.admission.links]
                    tasks.append(asyncio.ensure_future(client.post("/v1/completions", json=body)))
                    await until(lambda: len(upstream.bodies) + sum(task.done() for task in tasks) == len(tasks))
                forwarded = len(upstream.bodies)
                upstream_loop.call_soon_threadsafe(upstream.hold.set)
                responses = await asyncio.gather(*tasks)
                metrics = (await client.get("/metrics")).text
            spread = [link.served for link in supervisor.admission.links]
    codes = [response.status_code for response in responses]
    assert forwarded == 3 and codes.count(200) == 3 and codes.count(429) == len(codes) - 3, codes
    refused = [response for response in responses if response.status_code == 429]
    assert all("tokens per minute" in r.json()["error"] and "Retry-After" in r.headers for r in refused)
    assert all(body["priority"] == SLA["batch"].priority for body in upstream.bodies)
    assert sum(1 for served in spread if served) == 2, spread  # both workers took completions
    assert token_samples(metrics, "initech") == {"prompt": 9.0, "completion": 6.0}
    totals = requests_total(metrics)
    assert totals[("initech", "ok")] == 3 and totals[("initech", "rate_limited")] == len(codes) - 3


async def test_vllm_queue_length_sums_the_workers_and_a_stream_is_relayed_and_counted(tiny_model: Path) -> None:
    with upstream_in_thread() as (upstream, upstream_loop):
        upstream.waiting = 7.0
        upstream.hold = asyncio.Event()
        settings = vllm_settings(tiny_model, upstream, TENANTS)
        with serve_workers(settings, workers=2) as (url, supervisor):
            body = {"model": "textcls", "prompt": "hello", "max_tokens": 2}
            async with httpx.AsyncClient(base_url=url, timeout=60, limits=FRESH) as client:
                # Each request on a new connection, which the kernel hashes to a worker (SO_REUSEPORT): six of
                # them land on one worker 1 time in 32, so they are sent one by one until both workers hold some
                # (at least six, at most MAX_SPREAD_REQUESTS) and the counts below follow the number sent.
                held: list[asyncio.Future[httpx.Response]] = []
                while len(held) < 6 or sum(1 for link in supervisor.admission.links if link.served) < 2:
                    assert len(held) < MAX_SPREAD_REQUESTS, [link.served for link in supervisor.admission.links]
                    held.append(
                        asyncio.ensure_future(client.post("/v1/completions", json=body, headers=auth("globex")))
                    )
                    await until(lambda: len(upstream.bodies) == len(held))  # forwarded, no first byte yet
                sent = len(held)
                metrics = (await client.get("/metrics")).text
                spread = [link.served for link in supervisor.admission.links]
                upstream_loop.call_soon_threadsafe(upstream.hold.set)
                assert [r.status_code for r in await asyncio.gather(*held)] == [200] * len(held)
                chat = {"model": "textcls", "messages": [{"role": "user", "content": "hi"}], "stream": True}
                streamed = await client.post("/v1/chat/completions", json=chat, headers=auth("acme"))
                after = (await client.get("/metrics")).text
    assert sum(1 for served in spread if served) == 2 and sum(spread) == sent, spread  # through both workers
    queue = metric_lines(metrics, "request_queue_length{")
    assert queue['request_queue_length{model="textcls",sla_class="standard"}'] == sent  # both workers' sum
    assert queue['request_queue_length{model="textcls",sla_class="premium"}'] == 0.0
    assert metric_lines(metrics, "infopt_vllm_num_requests_waiting{") == {
        'infopt_vllm_num_requests_waiting{model="textcls"}': 7.0
    }
    assert streamed.status_code == 200
    events = [line[5:].strip() for line in streamed.text.splitlines() if line.startswith("data:")]
    assert events[-1] == "[DONE]" and any('"usage"' in event for event in events)  # the gateway asks for it
    assert token_samples(after, "acme") == {"prompt": 3.0, "completion": 2.0}
    assert token_samples(after, "globex") == {"prompt": 3.0 * sent, "completion": 2.0 * sent}
    after_queue = metric_lines(after, "request_queue_length{")
    assert after_queue['request_queue_length{model="textcls",sla_class="standard"}'] == 0.0
    totals = requests_total(after)
    assert totals[("globex", "ok")] == sent and totals[("acme", "ok")] == 1


def test_readiness_waits_for_every_worker_to_serve(tiny_model: Path) -> None:
    """A probe answered by a worker that is serving must not hide another that still loads its tokenizer
    (it would answer 503 still loading): ready only once every attached worker said HELLO."""
    from serving.admission import Admission, WorkerLink
    from serving.ipc import ID

    admission = Admission(make_settings(tiny_model, engine="vllm", vllm_urls=("http://127.0.0.1:9",)))
    links = [WorkerLink(admission, 0), WorkerLink(admission, 1)]
    admission.links.extend(links)
    assert admission.readiness() == (False, "2 of 2 HTTP workers still starting")
    links[0]._on_hello(ID.pack(101))
    assert admission.readiness() == (False, "1 of 2 HTTP workers still starting")
    links[1]._on_hello(ID.pack(102))
    assert admission.readiness() == (True, None)
    admission.begin_drain()
    assert admission.readiness() == (False, "shutting down")


def test_sigterm_to_the_supervisor_drains_its_workers_and_exits_0(tiny_model: Path, tmp_path: Path) -> None:
    """The real entry point (serving.supervisor.run_supervisor, as `infopt serve --workers 2`) in its own
    process with the real ONNX engine: SIGTERM reaches the supervisor only, which stops the workers."""
    script = tmp_path / "serve.py"
    port_file = tmp_path / "port"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from dataclasses import replace\n"
        "from serving.supervisor import run_supervisor, reuseport_sockets\n"
        "from tests.serving.gateway_kit import make_settings\n"
        f"settings = make_settings(Path({str(tiny_model)!r}), shutdown_grace_s=2.0)\n"
        "probe = reuseport_sockets('127.0.0.1', 0, 1)[0]\n"
        "port = probe.getsockname()[1]\n"
        "probe.close()\n"
        f"Path({str(port_file)!r}).write_text(str(port))\n"
        "sys.exit(run_supervisor(replace(settings, port=port), workers=2, log_level='warning'))\n"
    )
    process = subprocess.Popen([sys.executable, str(script)], env=dict(os.environ), start_new_session=False)
    try:
        deadline = time.monotonic() + 120
        while not port_file.is_file():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text()}"
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "never ready"
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        with httpx.Client(base_url=url, headers=auth("acme"), timeout=60, limits=FRESH) as client:
            answers = [client.post("/v1/classify", json={"texts": ["the kernel compiles"]}) for _ in range(6)]
            metrics = client.get("/metrics").text
        children = children_of(process.pid)
        assert len(children) == 2  # the two workers
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert not [child for child in children if Path(f"/proc/{child}").exists()]  # reaped by the supervisor
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert [r.status_code for r in answers] == [200] * 6
    assert json.loads(answers[0].text)["results"][0]["label"] in ("computers", "science", "work")
    assert requests_total(metrics)[("acme", "ok")] == 6
