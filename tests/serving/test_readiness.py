"""Readiness follows the engine on a real gateway: a corrupt model file gives a reason on /ready and in the
log (not a silent "still loading" forever); a hung engine takes the replica out and brings it back."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import httpx
import pytest

from serving.app import create_app
from tests.serving.gateway_kit import FakeEngine, auth, make_settings, serve_in_thread, until


async def test_a_corrupt_onnx_file_is_a_load_error_named_on_ready_in_the_log_and_in_every_refusal(
    tiny_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_model, corrupt)
    (corrupt / "model.onnx").write_bytes(b"not a protobuf at all" * 50)
    app = create_app(make_settings(corrupt))  # no engines given: the real ONNX loader
    gateway = app.state.gateway
    with serve_in_thread(app) as (url, _server):
        async with httpx.AsyncClient(base_url=url, headers=auth("acme")) as client:
            for _ in range(200):
                if gateway.load_error is not None:
                    break
                await asyncio.sleep(0.05)
            ready = await client.get("/v2/health/ready")
            model_ready = await client.get("/v2/models/textcls/ready")
            refused = await client.post("/v1/classify", json={"texts": ["a"]})
    for response in (ready, model_ready):
        assert response.status_code == 503 and response.json()["ready"] is False
        assert "failed to load" in response.json()["reason"] and "INVALID_PROTOBUF" in response.json()["reason"]
    assert refused.status_code == 503 and "failed to load" in refused.json()["error"]
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and "failed to load" in r.getMessage()]
    assert logged and "InvalidProtobuf" in (logged[0].exc_text or "")


async def test_a_hung_engine_takes_the_replica_out_of_readiness_until_its_batch_returns(tiny_model: Path) -> None:
    """The engine hangs on a row until the test ends the hang, after reading readiness during it."""
    engine = FakeEngine(hang_s=60.0)
    app = create_app(make_settings(tiny_model, engine_hang_s=0.3), engines=[engine])
    gateway = app.state.gateway
    hang = {"inputs": [{"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "data": [FakeEngine.HANG_ID, 5, 3]}]}
    try:
        with serve_in_thread(app) as (url, _server):
            async with httpx.AsyncClient(base_url=url, headers=auth("initech"), timeout=60) as client:
                await until(lambda: gateway.service is not None and gateway.service.batcher.healthy_count == 1)
                hung = asyncio.create_task(client.post("/v2/models/textcls/infer", json=hang))
                await until(lambda: gateway.service.batcher.healthy_count == 0)  # declared hung after 0.3 s
                during = await client.get("/v2/health/ready")
                engine.end_hang.set()  # the batch returns (the batch class's timeout is 5 s)
                answer = await hung
                await until(lambda: gateway.service.batcher.healthy_count == 1)
                after = await client.get("/v2/health/ready")
    finally:
        engine.end_hang.set()
    assert during.status_code == 503 and "hung" in during.json()["reason"]
    assert answer.status_code == 200  # the batch did return, valid: healthy again
    assert after.status_code == 200
