"""The load client against a real HTTP/1.1 server on 127.0.0.1 whose answers and delay are known."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from challenge.loadclient import ClientSpec, request_bytes, run_clients

DELAY_S = 0.02
ANSWERS = {  # text -> (status, body)
    "alpha ok": (200, b'{"results": []}'),
    "beta limit": (429, b'{"code": "rate_limited"}'),
    "gamma late": (503, b'{"code": "deadline_exceeded"}'),
    "delta busy": (503, b'{"code": "queue_full"}'),
    "eps bad": (500, b'{"code": "internal"}'),
}


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            text = json.loads(await reader.readexactly(length))["texts"][0]
            status, body = ANSWERS[text]
            await asyncio.sleep(DELAY_S)
            writer.write(
                f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


@pytest.fixture
def server() -> Iterator[int]:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}

    async def serve() -> None:
        holder["server"] = await asyncio.start_server(_handle, "127.0.0.1", 0)
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(serve()), loop.run_forever()), daemon=True)
    thread.start()
    assert started.wait(10)
    port = holder["server"].sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    yield port
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_request_bytes_is_a_complete_http_request() -> None:
    raw = request_bytes("/v1/classify", "key", "a text")
    head, body = raw.split(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/classify HTTP/1.1\r\n")
    assert b"Authorization: Bearer key" in head
    assert f"Content-Length: {len(body)}".encode() in head and json.loads(body) == {"texts": ["a text"]}


def test_k_texts_per_request_go_in_rotation_and_count_as_texts(server: int, tmp_path: Path) -> None:
    spec = ClientSpec(
        ports=[server], api_key="k", texts=["alpha ok"] * 4, connections=2, warmup_s=0.2, duration_s=1.0,
        texts_per_request=4,
    )  # fmt: skip
    result = run_clients(spec, processes=1, workdir=tmp_path, timeout_s=60)
    assert result.ok > 0 and result.errors == 0 and result.texts_per_request == 4
    assert result.texts_per_s == pytest.approx(4 * result.throughput_rps)
    raw = request_bytes("/v1/classify", "key", ["one", "two"])
    assert json.loads(raw.split(b"\r\n\r\n")[1]) == {"texts": ["one", "two"]}


def test_every_answer_lands_in_its_bucket_and_latency_includes_the_server_delay(server: int, tmp_path: Path) -> None:
    connections, duration = 5, 1.5
    spec = ClientSpec(
        ports=[server],
        api_key="k",
        texts=list(ANSWERS),
        connections=connections,
        warmup_s=0.3,
        duration_s=duration,
    )
    result = run_clients(spec, processes=2, workdir=tmp_path, timeout_s=60)
    counts = {
        "ok": result.ok,
        "429": result.status_429,
        "expired": result.expired,
        "503": result.status_503,
        "errors": result.errors,
    }
    # each connection cycles through the 5 texts, so the buckets differ by at most one per connection
    assert max(counts.values()) - min(counts.values()) <= connections, counts
    assert result.ok > 0 and "HTTP 500" in result.error_samples[0]
    # closed loop: at most `connections` requests per DELAY_S, and every latency includes the delay
    assert sum(counts.values()) <= connections * duration / DELAY_S
    assert result.latency_p50_ms is not None and result.latency_p50_ms >= DELAY_S * 1000
    assert result.throughput_rps == pytest.approx(result.ok / duration)
    assert result.processes == 2 and len(result.worker_cpu_fraction) == 2


def test_a_failed_worker_is_reported_with_its_log(tmp_path: Path) -> None:
    spec = ClientSpec(
        ports=[1],  # nothing listens on port 1: the connect fails
        api_key="k",
        texts=["x"],
        connections=1,
        warmup_s=0.0,
        duration_s=0.5,
    )
    with pytest.raises(RuntimeError, match="load client worker"):
        run_clients(spec, processes=1, workdir=tmp_path, timeout_s=60)
