"""One error path on a real gateway: every failure is a JSON error with a status and a code, counted once
under that status; a client that leaves is counted as such, never ok; invalid engine output (NaN/Inf,
wrong shape) is an engine error that takes the replica out of readiness until a probe finds it healthy."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from infopt.params import BatchingParams
from serving.app import Gateway, create_app
from tests.serving.gateway_kit import KEYS, LABELS, FakeEngine, auth, make_settings, serve, until


class BrokenOutputEngine(FakeEngine):
    """While `broken` is set, answers NaN logits (mode "nan") or one column too many (mode "shape")."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.broken = True

    def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        logits = super().infer(input_ids, attention_mask)
        if not self.broken:
            return logits
        if self.mode == "nan":
            logits[0, 0] = np.nan
            return logits
        return np.zeros((len(input_ids), len(LABELS) + 1), dtype=np.float32)


def sample(gateway: Gateway, prefix: str, *needles: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in gateway.metrics.render().decode().splitlines()
        if line.startswith(prefix) and all(needle in line for needle in needles)
    )


@pytest.mark.parametrize(("mode", "needle"), [("nan", "non-finite logits"), ("shape", "expected (1, 3)")])
async def test_invalid_engine_output_is_503_takes_the_replica_out_of_readiness_and_a_probe_brings_it_back(
    tiny_model: Path, mode: str, needle: str
) -> None:
    engine = BrokenOutputEngine(mode)
    settings = make_settings(tiny_model, unhealthy_after_failures=2, health_probe_interval_s=0.2)
    app = create_app(settings, engines=[engine])
    gateway = app.state.gateway
    async with serve(app) as url, httpx.AsyncClient(base_url=url, headers=auth("acme")) as client:
        engine.broken = True
        failed = [await client.post("/v1/classify", json={"texts": ["the kernel"]}) for _ in range(2)]
        ready = await client.get("/v2/health/ready")
        refused_fast = await client.post("/v1/classify", json={"texts": ["the kernel"]})
        engine.broken = False
        await until(lambda: gateway.service.batcher.healthy_count == 1)  # the probe saw valid output
        recovered = await client.get("/v2/health/ready")
        served = await client.post("/v1/classify", json={"texts": ["the kernel"]})
    for response in failed:
        assert response.status_code == 503 and response.json()["code"] == "engine_unavailable"
        assert needle in response.json()["error"] and "Retry-After" in response.headers
    assert ready.status_code == 503 and "2 failed batches in a row" in ready.json()["reason"]
    assert refused_fast.status_code == 503 and "no healthy backend" in refused_fast.json()["error"]
    assert recovered.status_code == 200 and served.status_code == 200
    assert sample(gateway, "infopt_requests_total{", 'status="engine_error"') == 3
    assert sample(gateway, "infopt_requests_total{", 'status="ok"') == 1


async def test_a_client_leaving_mid_body_or_before_its_answer_is_counted_client_disconnected(
    tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = FakeEngine(service_s=0.4)
    settings = make_settings(tiny_model, batching=BatchingParams(mode="dynamic", max_batch_size=1, max_wait_ms=1))
    app = create_app(settings, engines=[engine])
    gateway = app.state.gateway
    head = f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEYS['acme']}\r\n"
    head += "Content-Type: application/json\r\n"
    body = b'{"texts": ["the kernel compiles"]}'
    async with serve(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:  # 10 of 500 body bytes, then gone
            sock.sendall((head + "Content-Length: 500\r\n\r\n").encode() + body[:10])
            await until(lambda: gateway.inflight == 1)
        await until(lambda: sample(gateway, "infopt_requests_total{", 'status="client_disconnected"') == 1)
        with socket.create_connection(("127.0.0.1", port)) as sock:  # a whole request, gone before the answer
            sock.sendall((head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
            await until(lambda: engine.batches)
        await until(lambda: gateway.inflight == 0)
    assert sample(gateway, "infopt_requests_total{", 'status="client_disconnected"') == 2
    assert (
        sample(gateway, "infopt_requests_total{", 'status="ok"') == 0
    )  # the engine answered; the client did not get it
    assert sample(gateway, "infopt_rejections_total{") == 0  # leaving is not a refusal
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_an_unexpected_exception_is_a_json_500_counted_internal_error_and_logged(
    tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings(tiny_model), engines=[FakeEngine()])
    gateway = app.state.gateway

    def bug(*args: object) -> None:
        raise ZeroDivisionError("division by zero")

    gateway.tenancy.admit_cost = bug  # a bug in the request path, after the body was read
    async with serve(app) as url, httpx.AsyncClient(base_url=url, headers=auth("acme")) as client:
        response = await client.post("/v1/classify", json={"texts": ["a"]})
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    assert response.json()["code"] == "internal" and "ZeroDivisionError" in response.json()["error"]
    assert sample(gateway, "infopt_requests_total{", 'status="internal_error"', 'tenant="acme"') == 1
    assert any("ZeroDivisionError" in (record.exc_text or "") for record in caplog.records)


class GateEngine(FakeEngine):
    """Holds every batch until `gate` is set (bounded), so a test can fill the queue behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.entered.set()
        self.gate.wait(10)
        return super().infer(input_ids, attention_mask)


async def test_an_evicted_request_is_counted_once_in_requests_and_in_rejections(tiny_model: Path) -> None:
    engine = GateEngine()
    settings = make_settings(
        tiny_model, queue_capacity=2, batching=BatchingParams(mode="dynamic", max_batch_size=1, max_wait_ms=1)
    )
    app = create_app(settings, engines=[engine])
    gateway = app.state.gateway
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:

        def post_batch(index: int) -> asyncio.Task[httpx.Response]:
            body = {"texts": [f"b{index}"]}
            return asyncio.create_task(client.post("/v1/classify", headers=auth("initech"), json=body))

        batch = [post_batch(0)]
        await until(engine.entered.is_set)  # the first row is in the engine, out of the queue
        batch += [post_batch(1), post_batch(2)]
        await until(lambda: len(gateway.service.queue) == 2)  # the queue is full
        premium_task = asyncio.create_task(client.post("/v1/classify", headers=auth("acme"), json={"texts": ["p"]}))
        await until(lambda: sample(gateway, "infopt_requests_total{", 'status="queue_full"') == 1)
        engine.gate.set()
        premium = await premium_task
        outcomes = [response.json().get("code") for response in await asyncio.gather(*batch)]
    assert premium.status_code == 200
    assert sorted(outcomes, key=str) == [None, None, "queue_full"]  # the newest batch row was evicted
    assert sample(gateway, "infopt_rejections_total{", 'reason="queue_full"', 'tenant="initech"') == 1
    assert sample(gateway, "infopt_requests_total{", 'status="queue_full"', 'tenant="initech"') == 1
