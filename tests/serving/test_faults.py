"""Engine faults: a raising engine gives 503 and then recovers; a hung engine gives 503 at the deadline
without blocking other requests or the event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from infopt.params import BatchingParams
from serving.app import create_app
from tests.serving.gateway_kit import FakeEngine, auth, make_settings, serve, until


async def test_engine_error_is_503_with_retry_after_and_then_recovers(tiny_model: Path) -> None:
    engine = FakeEngine()
    async with serve(create_app(make_settings(tiny_model), engines=[engine])) as url:
        async with httpx.AsyncClient(base_url=url, headers=auth("acme")) as client:
            engine.failing.set()
            failed = await client.post("/v1/classify", json={"texts": ["the kernel"]})
            assert failed.status_code == 503
            assert failed.json()["code"] == "engine_unavailable" and "fake engine failure" in failed.json()["error"]
            assert int(failed.headers["Retry-After"]) >= 1
            engine.failing.clear()
            recovered = await client.post("/v1/classify", json={"texts": ["the kernel"]})
            assert recovered.status_code == 200
            metrics = (await client.get("/metrics")).text
    assert (
        'infopt_requests_total{model="textcls",sla_class="premium",status="engine_error",tenant="acme"} 1.0' in metrics
    )


async def test_hung_engine_answers_503_at_the_deadline_while_others_are_served(tiny_model: Path) -> None:
    """One replica hangs on a row (until the test ends it, after the answers): that row is answered 503 at its
    deadline, and the other requests are served by the free replica meanwhile, not behind the hung one."""
    replicas = [FakeEngine(hang_s=60.0), FakeEngine(hang_s=60.0)]
    settings = make_settings(
        tiny_model, engine_replicas=2, batching=BatchingParams(mode="dynamic", max_batch_size=4, max_wait_ms=1)
    )
    hang_body = {
        "inputs": [{"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "data": [FakeEngine.HANG_ID, 5, 3]}]
    }
    try:
        async with serve(create_app(settings, engines=replicas)) as url:
            async with httpx.AsyncClient(base_url=url, headers=auth("acme"), timeout=60) as client:
                loop = asyncio.get_running_loop()
                start = loop.time()
                hung = asyncio.create_task(client.post("/v2/models/textcls/infer", json=hang_body))
                await until(lambda: any(replica.batches for replica in replicas))  # the hung row is running
                others = [
                    (await client.post("/v1/classify", json={"texts": ["atoms form molecules"]})).status_code
                    for _ in range(5)
                ]
                live = await client.get("/v2/health/live")
                hung_response = await hung
                hung_elapsed = loop.time() - start
                still_hung = not any(replica.end_hang.is_set() for replica in replicas)
    finally:
        for replica in replicas:
            replica.end_hang.set()
    assert still_hung  # everything above was answered while the hang lasted
    assert others == [200] * 5  # served by the free replica (behind the hung one they would expire at 1 s)
    assert live.status_code == 200
    assert hung_response.status_code == 503 and hung_response.json()["code"] == "deadline_exceeded"
    assert 0.9 <= hung_elapsed < 30  # premium timeout_ms is 1000 in the test SLA; the hang lasts until ended
