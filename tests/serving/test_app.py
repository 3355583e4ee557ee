"""The gateway over a real uvicorn server with a tiny real ONNX model: protocol, health, errors, metrics."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from serving.app import create_app
from tests.serving.gateway_kit import LABELS, auth, make_settings, serve


@pytest.fixture
async def gateway_url(tiny_model: Path) -> str:
    async with serve(create_app(make_settings(tiny_model))) as url:
        yield url


async def test_health_metadata_and_ready_endpoints(gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url) as client:
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        assert (await client.get("/v2/health/ready")).status_code == 200
        assert (await client.get("/v2/models/textcls/ready")).status_code == 200
        meta = (await client.get("/v2/models/textcls")).json()
        assert meta["name"] == "textcls"
        assert {tensor["name"] for tensor in meta["outputs"]} == {"logits", "label"}
        assert meta["outputs"][0]["shape"] == [-1, len(LABELS)]
        assert (await client.get("/v2")).json()["name"] == "infopt-gateway"
        missing = await client.get("/v2/models/nope")
        assert missing.status_code == 404 and "nope" in missing.json()["error"]


async def test_v2_infer_with_token_ids_and_with_text_give_the_same_logits(gateway_url: str, tiny_model: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    ids = tokenizer.encode("the kernel compiles code").ids
    token_body = {
        "id": "r1",
        "inputs": [
            {"name": "input_ids", "shape": [1, len(ids) + 2], "datatype": "INT64", "data": [*ids, 0, 0]},
            {
                "name": "attention_mask",
                "shape": [1, len(ids) + 2],
                "datatype": "INT64",
                "data": [1] * len(ids) + [0, 0],
            },
        ],
    }
    text_body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["the kernel compiles code"]}]}
    async with httpx.AsyncClient(base_url=gateway_url, headers=auth("acme")) as client:
        by_ids = await client.post("/v2/models/textcls/infer", json=token_body)
        by_text = await client.post("/v2/models/textcls/infer", json=text_body)
    assert by_ids.status_code == 200, by_ids.text
    assert by_text.status_code == 200, by_text.text
    first, second = by_ids.json(), by_text.json()
    assert first["id"] == "r1" and first["model_name"] == "textcls"
    logits = {o["name"]: o for o in first["outputs"]}["logits"]
    assert logits["datatype"] == "FP32" and logits["shape"] == [1, len(LABELS)]
    np.testing.assert_allclose(
        logits["data"], {o["name"]: o for o in second["outputs"]}["logits"]["data"], rtol=1e-5, atol=1e-6
    )
    label = {o["name"]: o for o in first["outputs"]}["label"]
    assert label["datatype"] == "BYTES" and label["data"][0] in LABELS


async def test_classify_returns_labels_and_probabilities_per_text(gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url, headers={"x-api-key": "globex-test-key"}) as client:
        response = await client.post("/v1/classify", json={"texts": ["atoms form molecules", "the office prints"]})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 2
    for result in results:
        assert result["label"] in LABELS
        assert set(result["probabilities"]) == set(LABELS)
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "invalid JSON"),
        (b'{"inputs": []}', 422, "inputs"),
        (
            b'{"inputs": [{"name": "input_ids", "shape": [2, 3], "datatype": "INT64", "data": [1, 2, 3]}]}',
            422,
            "needs 6 values",
        ),
        (
            b'{"inputs": [{"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "data": [1.5, 2]}]}',
            422,
            "integers",
        ),
        (b'{"inputs": [{"name": "input_ids", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}', 422, "datatype"),
        (
            b'{"inputs": [{"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 999999]}]}',
            422,
            "input_ids must be in",
        ),
        (b'{"inputs": [{"name": "input_ids", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]}]}', 422, "[B, T]"),
        (b'{"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a"]}]}', 422, "needs 2 strings"),
        (
            b'{"inputs": [{"name": "text", "shape": [9], "datatype": "BYTES", "data": ["a","a","a","a","a","a","a","a","a"]}]}',
            422,
            "max_batch_size",
        ),
        (b"[1, 2]", 422, "invalid v2 request"),
    ],
)
async def test_bad_input_is_a_4xx_with_a_clear_message(gateway_url: str, body: bytes, status: int, needle: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url, headers=auth("acme")) as client:
        response = await client.post(
            "/v2/models/textcls/infer", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]


async def test_oversize_body_unknown_model_and_unknown_key_are_refused(gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url) as client:
        big = await client.post("/v1/classify", headers=auth("acme"), json={"texts": ["x" * 10_000]})
        assert big.status_code == 413 and "4096" in big.json()["error"]
        unknown = await client.post("/v2/models/other/infer", headers=auth("acme"), json={"inputs": []})
        assert unknown.status_code == 404 and "other" in unknown.json()["error"]
        nokey = await client.post("/v1/classify", json={"texts": ["a"]})
        assert nokey.status_code == 401 and "API key" in nokey.json()["error"]
        badkey = await client.post("/v1/classify", headers={"Authorization": "Bearer wrong"}, json={"texts": ["a"]})
        assert badkey.status_code == 401 and "unknown API key" in badkey.json()["error"]
        llm = await client.post("/v1/completions", headers=auth("acme"), json={"prompt": "hi"})
        assert llm.status_code == 404 and "no LLM engine configured" in llm.json()["error"]


async def test_tritonclient_http_infers_against_the_gateway(gateway_url: str) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=gateway_url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_model_ready("textcls")
        ids = np.array([[2, 10, 11, 3], [2, 12, 3, 0]], dtype=np.int64)
        mask = (ids != 0).astype(np.int64)
        inputs = [
            triton.InferInput("input_ids", list(ids.shape), "INT64"),
            triton.InferInput("attention_mask", list(mask.shape), "INT64"),
        ]
        inputs[0].set_data_from_numpy(ids, binary_data=False)
        inputs[1].set_data_from_numpy(mask, binary_data=False)
        outputs = [
            triton.InferRequestedOutput("logits", binary_data=False),
            triton.InferRequestedOutput("label", binary_data=False),
        ]
        result = client.infer("textcls", inputs, outputs=outputs, headers=auth("acme"))
        logits = result.as_numpy("logits")
        assert logits.shape == (2, len(LABELS)) and logits.dtype == np.float32
        assert all(str(label) in LABELS for label in result.as_numpy("label"))
    finally:
        client.close()
