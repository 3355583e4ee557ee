"""Limits before authentication, on a real gateway over raw sockets: 431 header size and count, 408 header
and body read time, 413 body size, the per-process connection limit; each refusal is JSON and counted."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from serving.app import Gateway, create_app
from tests.serving.gateway_kit import KEYS, FakeEngine, make_settings, serve


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def exchange(port: int, payload: bytes, *, chunk: int = 65536, read_timeout_s: float = 10.0) -> bytes:
    """Send `payload` (stopping quietly if the server closes) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout_s) as sock:
        try:
            for start in range(0, len(payload), chunk):
                sock.sendall(payload[start : start + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-send: what it answered is still readable
        received = b""
        try:
            while data := sock.recv(65536):
                received += data
        except ConnectionResetError:
            pass
    return received


def status_and_body(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def counted(gateway: Gateway, status: str, reason: str) -> tuple[float, float]:
    requests = rejections = 0.0
    for line in gateway.metrics.render().decode().splitlines():
        if line.startswith("infopt_requests_total{") and f'status="{status}"' in line and 'tenant="unknown"' in line:
            requests += float(line.rsplit(" ", 1)[1])
        if line.startswith("infopt_rejections_total{") and f'reason="{reason}"' in line:
            rejections += float(line.rsplit(" ", 1)[1])
    return requests, rejections


@pytest.fixture
async def limited(tiny_model: Path) -> AsyncIterator[tuple[int, Gateway]]:
    settings = make_settings(
        tiny_model, max_header_bytes=2048, max_header_count=20, header_timeout_s=0.5, body_timeout_s=0.5
    )
    app = create_app(settings, engines=[FakeEngine()])
    async with serve(app) as url:
        yield _port(url), app.state.gateway


async def test_oversized_headers_get_431_and_the_connection_closes_before_buffering_them(
    limited: tuple[int, Gateway],
) -> None:
    port, gateway = limited
    big = b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8 * 1024 * 1024 + b"\r\n\r\n"
    status, body = status_and_body(await asyncio.to_thread(exchange, port, big))
    assert status == 431 and body["code"] == "header_too_large" and "2048 bytes" in body["error"]
    many = b"GET /v2/health/live HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(30)) + b"\r\n"
    status, body = status_and_body(await asyncio.to_thread(exchange, port, many))
    assert status == 431 and "more than 20 header fields" in body["error"]
    assert counted(gateway, "bad_request", "header_too_large") == (2.0, 2.0)


async def test_slow_headers_and_a_silent_connection_get_408_after_the_header_timeout(
    limited: tuple[int, Gateway],
) -> None:
    port, gateway = limited
    loop = asyncio.get_running_loop()
    began = loop.time()
    partial = b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n"  # never finished
    status, body = status_and_body(await asyncio.to_thread(exchange, port, partial))
    assert status == 408 and body["code"] == "header_timeout"
    assert 0.45 <= loop.time() - began < 5.0  # header_timeout_s is 0.5
    status, body = status_and_body(await asyncio.to_thread(exchange, port, b""))
    assert status == 408 and body["code"] == "header_timeout"
    assert counted(gateway, "timeout", "header_timeout") == (2.0, 2.0)


async def test_a_trickled_body_gets_408_and_an_oversized_one_413_before_it_is_read(
    limited: tuple[int, Gateway],
) -> None:
    port, gateway = limited
    head = f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEYS['acme']}\r\n"
    head += "Content-Type: application/json\r\n"
    slow = (head + "Content-Length: 100\r\n\r\n").encode() + b'{"texts": '  # 10 of 100 bytes, then nothing
    status, body = status_and_body(await asyncio.to_thread(exchange, port, slow))
    assert status == 408 and body["code"] == "body_timeout"
    huge = (head + "Content-Length: 50000000\r\n\r\n").encode()
    status, body = status_and_body(await asyncio.to_thread(exchange, port, huge))
    assert status == 413 and "4096" in body["error"]
    text = gateway.metrics.render().decode()
    assert 'infopt_requests_total{model="textcls",sla_class="premium",status="timeout",tenant="acme"} 1.0' in text
    assert 'infopt_rejections_total{model="textcls",reason="too_large",tenant="acme"} 1.0' in text


async def test_connections_past_the_limit_get_503_with_retry_after(tiny_model: Path) -> None:
    app = create_app(make_settings(tiny_model, max_connections=3, header_timeout_s=30), engines=[FakeEngine()])
    async with serve(app) as url:
        port = _port(url)
        held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        try:
            await asyncio.sleep(0.2)  # the server has accepted them
            response = await asyncio.to_thread(exchange, port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        finally:
            for sock in held:
                sock.close()
        head = response.partition(b"\r\n\r\n")[0].lower()
        status, body = status_and_body(response)
        assert status == 503 and body["code"] == "too_many_connections" and b"retry-after: 1" in head
        await asyncio.sleep(0.3)  # the held ones are closed now: a new connection is served
        status, body = status_and_body(
            await asyncio.to_thread(
                exchange, port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
        )
        assert status == 200 and body == {"live": True}
    assert counted(app.state.gateway, "overloaded", "too_many_connections") == (1.0, 1.0)
