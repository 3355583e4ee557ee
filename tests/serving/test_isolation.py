"""Priority isolation under a batch-tenant flood at ~10x capacity (bounded to 3 s), with full accounting.

The flood comes from a separate `infopt loadgen` process so the client's CPU does not share the server's
GIL; premium traffic comes from this process. The engine is a fake with a fixed service time, so capacity
is known exactly on a loaded 2-core box.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from harness.loadgen import LoadReport, Stream, run_load
from infopt.params import BatchingParams, SlaClass
from serving.app import create_app
from tests.serving.gateway_kit import KEYS, SLA, FakeEngine, auth, make_settings, serve, tenant

SERVICE_S = 0.05  # fixed engine time per batch
MAX_BATCH = 1  # capacity = 1 row / 50 ms = 20 requests/s
# A premium row waits at most the batch running when it arrives and its own (2 x 50 ms by design), which leaves
# 150 ms of the 250 ms bucket judged below for tokenising and this shared box's scheduling.
FLOOD_RPS = 200  # ~10x capacity
ISOLATION_SLA = dict(
    SLA, premium=SlaClass(p99_ms=300, timeout_ms=1000, priority=0, weight=8, k8s_priority_value=100000)
)
INFOPT = str(Path(sys.executable).parent / "infopt")


def _accounted(report: LoadReport) -> None:
    for stream in report.streams:
        assert stream.errors == 0, stream.error_samples
        assert stream.sent == stream.ok + stream.status_429 + stream.status_503 + stream.expired


def _premium_over_sla(metrics: str, limit_s: float) -> tuple[float, float]:
    """(premium requests, of which slower than limit_s) from the gateway's latency histogram."""
    total = within = 0.0
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "infopt_request_latency_seconds_bucket" and sample.labels["sla_class"] == "premium":
                if sample.labels["le"] == "+Inf":
                    total = sample.value
                elif float(sample.labels["le"]) == limit_s:
                    within = sample.value
    return total, total - within


async def _until_flooding(url: str, flood: asyncio.subprocess.Process, timeout_s: float = 120.0) -> None:
    """Wait until the gateway has counted the flood's requests (its process starts slowly on a loaded box)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with httpx.AsyncClient(base_url=url) as client:
        while _counted(await (await client.get("/metrics")).aread(), "initech") < 20:
            assert flood.returncode is None, "the flood process ended before the gateway counted its requests"
            assert loop.time() < deadline, f"the gateway counted no flood within {timeout_s} s"
            await asyncio.sleep(0.05)


def _counted(metrics: bytes, tenant: str) -> float:
    """The gateway's count of a tenant's requests, whatever their answer."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics.decode())
        for sample in family.samples
        if sample.name == "infopt_requests_total" and sample.labels["tenant"] == tenant
    )


async def test_premium_meets_its_sla_while_batch_floods_and_batch_recovers(tiny_model: Path, tmp_path: Path) -> None:
    settings = make_settings(
        tiny_model,
        sla_classes=ISOLATION_SLA,
        tenants=(tenant("acme", "premium"), tenant("initech", "batch", rate=60, burst=20)),
        batching=BatchingParams(mode="dynamic", max_batch_size=MAX_BATCH, max_wait_ms=2),
        queue_capacity=16,
        header_timeout_s=120,  # the flood client is CPU-starved on a loaded box: no slowloris cut here
    )
    app = create_app(settings, engines=[FakeEngine(service_s=SERVICE_S)])
    out = tmp_path / "flood.json"
    async with serve(app) as url:
        flood = await asyncio.create_subprocess_exec(
            INFOPT,
            "loadgen",
            "--url",
            url,
            "--model",
            "textcls",
            "--out",
            str(out),
            "--stream",
            f"name=initech,key={KEYS['initech']},mode=open,rate={FLOOD_RPS},duration=3,class=batch",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=dict(os.environ, COLUMNS="200"),
        )
        await _until_flooding(url, flood)  # premium traffic is measured against a running flood, never before it
        premium = await run_load(
            url,
            [Stream("acme", KEYS["acme"], mode="open", rate_per_s=5, duration_s=2.0, sla_class="premium")],
            model="textcls",
            timeout_s=10,
        )
        # Generous: the flood is 3 s of traffic, but its process starts, and its last requests are answered,
        # on a loaded shared box (it took over 60 s here at a load average of 14).
        _, stderr = await asyncio.wait_for(flood.communicate(), timeout=300)
        assert flood.returncode == 0, stderr.decode()
        recovery = await run_load(
            url,
            [Stream("initech", KEYS["initech"], mode="closed", concurrency=1, count=5, duration_s=10)],
            model="textcls",
        )
        async with httpx.AsyncClient(base_url=url) as client:
            metrics = (await client.get("/metrics")).text
    batch_report = LoadReport.model_validate(json.loads(out.read_text()))
    batch = batch_report.streams[0]
    for report in (premium, batch_report, recovery):
        _accounted(report)
    acme = premium.streams[0]
    assert acme.ok == acme.sent >= 3
    total, slow = _premium_over_sla(metrics, 0.25)
    # The SLA is the gateway's: every premium request answered within 250 ms of its arrival, by the gateway's
    # own histogram (its p99 is then within the 300 ms SLA whatever the percentile's interpolation).
    assert total == acme.sent and slow == 0
    # Client-side the premium client shares this process (and its GIL) with the server thread and a 2-core box
    # with the flood process: its clock includes its own starvation (348 ms was seen at a load average of 14
    # with every request under 250 ms at the gateway), so it is held to the premium deadline, not the SLA.
    assert acme.latency_ms.p99 < ISOLATION_SLA["premium"].timeout_ms
    assert batch.sent >= 300  # ~10x the 20/s capacity for 3 s (Poisson, bounded by the duration)
    assert batch.status_429 > 0 and batch.status_503 > 0  # refused explicitly: rate limit, then full queue
    assert batch.ok > 0  # weighted shares: the flooding class still gets served
    assert recovery.streams[0].ok == 5
    counted = _counted(metrics.encode(), "initech")
    assert counted == batch.sent + recovery.streams[0].sent  # the gateway counted every request: none lost


async def test_premium_is_not_stalled_behind_large_legal_requests_of_the_batch_tenant(tiny_model: Path) -> None:
    """Slow-tenant isolation: ~1 MB bodies of 8 long texts each (inside the body limit and the batch tenant's
    quota) are parsed and tokenized off the event loop and cut to max_text_chars, so premium requests and
    the liveness probe are not stalled behind them. Judged relative to the large requests' own latency (a
    premium answer takes a fraction of one large request's time), so a slow or shared CI box cannot fail it;
    the absolute p99 under this load is measured by benchmarks/isolation.py."""
    settings = make_settings(
        tiny_model,
        tenants=(tenant("acme", "premium"), tenant("initech", "batch", rate=100, burst=100)),
        max_body_bytes=1_048_576,
        sla_classes={**SLA, "premium": SLA["premium"].model_copy(update={"timeout_ms": 30_000})},  # no expiry
    )
    app = create_app(settings, engines=[FakeEngine()])
    texts = [("the kernel compiles the code " * 4400)[:125_000] for _ in range(8)]  # 8 x 125 kB = ~1 MB
    large = json.dumps({"texts": texts}).encode()
    assert 900_000 < len(large) <= 1_048_576
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + 3.0
        headers = {**auth("initech"), "content-type": "application/json"}

        async def batch_tenant() -> list[tuple[httpx.Response, float]]:
            answers = []
            while loop.time() < stop_at:
                began = loop.time()
                answer = await client.post("/v1/classify", content=large, headers=headers)
                answers.append((answer, loop.time() - began))
                await asyncio.sleep(0.25)
            return answers

        async def premium() -> list[tuple[int, float]]:
            seen = []
            while loop.time() < stop_at:
                began = loop.time()
                response = await client.post("/v1/classify", headers=auth("acme"), json={"texts": ["the disk spins"]})
                seen.append((response.status_code, loop.time() - began))
                live_began = loop.time()
                assert (await client.get("/v2/health/live")).status_code == 200
                seen.append((200, loop.time() - live_began))
            return seen

        big, small = await asyncio.gather(batch_tenant(), premium())
    assert len(big) >= 4 and all(r.status_code == 200 for r, _ in big), [r.text[:200] for r, _ in big]
    assert all(result["truncated"] for response, _ in big for result in response.json()["results"])
    assert len(small) >= 20 and all(status == 200 for status, _ in small), [s for s, _ in small if s != 200]
    large_median = statistics.median(seconds for _, seconds in big)
    small_median = statistics.median(seconds for _, seconds in small)
    assert small_median < large_median / 4, f"premium median {small_median:.3f} s vs large {large_median:.3f} s"
