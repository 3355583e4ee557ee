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
from tests.serving.gateway_kit import FakeEngine, auth, make_settings, serve_in_thread


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
    engine = FakeEngine(hang_s=1.5)
    app = create_app(make_settings(tiny_model, engine_hang_s=0.3), engines=[engine])
    gateway = app.state.gateway
    hang = {"inputs": [{"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "data": [FakeEngine.HANG_ID, 5, 3]}]}
    with serve_in_thread(app) as (url, _server):
        async with httpx.AsyncClient(base_url=url, headers=auth("initech"), timeout=10) as client:
            for _ in range(200):
                if (await client.get("/v2/health/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            hung = asyncio.create_task(client.post("/v2/models/textcls/infer", json=hang))
            for _ in range(200):
                if gateway.service.batcher.healthy_count == 0:
                    break
                await asyncio.sleep(0.02)
            during = await client.get("/v2/health/ready")
            answer = await hung
            after = await client.get("/v2/health/ready")
    assert during.status_code == 503 and "hung" in during.json()["reason"]
    assert answer.status_code == 200  # the batch did return (batch class timeout 5 s), valid: healthy again
    assert after.status_code == 200
