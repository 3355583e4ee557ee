"""The gateway's Server-Timing header: its own time on every response the app writes (served, refused,
routing errors, health, metrics), at least the engine's time on a served request and at most what the
client measured; and the header's parser on well-formed, foreign and malformed values."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from serving.app import create_app
from serving.timing import parse_gateway_ms, server_timing_value
from tests.serving.gateway_kit import FakeEngine, auth, make_settings, serve

SERVICE_S = 0.03  # the fake engine's time per batch


async def test_every_response_carries_the_gateways_own_time(tiny_model: Path) -> None:
    app = create_app(make_settings(tiny_model), engines=[FakeEngine(service_s=SERVICE_S)])
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        began = time.perf_counter()
        served = await client.post("/v1/classify", headers=auth("acme"), json={"texts": ["the kernel"]})
        client_ms = (time.perf_counter() - began) * 1000.0
        others = {
            "unauthorized": await client.post("/v1/classify", json={"texts": ["the kernel"]}),
            "bad request": await client.post("/v1/classify", headers=auth("acme"), json={"texts": []}),
            "no route": await client.get("/v9/nothing"),
            "wrong method": await client.get("/v1/classify"),
            "live": await client.get("/v2/health/live"),
            "ready": await client.get("/v2/health/ready"),
            "metrics": await client.get("/metrics"),
            "v2 infer": await client.post(
                "/v2/models/textcls/infer",
                headers=auth("acme"),
                json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["atoms"]}]},
            ),
        }
    assert served.status_code == 200
    gateway_ms = parse_gateway_ms(served.headers.get("server-timing"))
    assert gateway_ms is not None and SERVICE_S * 1000.0 <= gateway_ms <= client_ms
    assert [others[name].status_code for name in others] == [401, 422, 404, 405, 200, 200, 200, 200]
    for name, response in others.items():
        value = parse_gateway_ms(response.headers.get("server-timing"))
        assert value is not None and value >= 0.0, f"{name}: Server-Timing {response.headers.get('server-timing')!r}"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (server_timing_value(0.0123456).decode(), 12.346),
        ("cache;desc=hit, gateway;dur=4.5", 4.5),
        ('gateway;desc="infopt";dur=7', 7.0),
        ("db;dur=3", None),
        ("gateway", None),
        ("gateway;dur=fast", None),
        ("", None),
        (None, None),
    ],
)
def test_the_parser_reads_the_gateway_entry_only(header: str | None, expected: float | None) -> None:
    assert parse_gateway_ms(header) == expected
