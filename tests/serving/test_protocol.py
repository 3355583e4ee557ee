"""Protocol completeness on a real gateway: KServe versioned v2 paths, JSON 404/405, the content type
checked (415), shapes checked strictly, and /metrics + metadata behind an admin token or an admin port."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from serving.app import create_app
from tests.serving.gateway_kit import FakeEngine, auth, free_socket, make_settings, serve, serve_in_thread

TEXT = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["the kernel"]}]}


@pytest.fixture
async def gateway_url(tiny_model: Path) -> str:
    async with serve(create_app(make_settings(tiny_model), engines=[FakeEngine()])) as url:
        yield url


async def test_versioned_v2_paths_serve_version_1_and_refuse_others_as_json(gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url, headers=auth("acme")) as client:
        infer = await client.post("/v2/models/textcls/versions/1/infer", json=TEXT)
        meta = await client.get("/v2/models/textcls/versions/1")
        ready = await client.get("/v2/models/textcls/versions/1/ready")
        other = await client.post("/v2/models/textcls/versions/2/infer", json=TEXT)
    assert infer.status_code == 200 and infer.json()["model_version"] == "1"
    assert meta.status_code == 200 and meta.json()["versions"] == ["1"]
    assert ready.status_code == 200
    assert other.status_code == 404 and other.json()["code"] == "unknown_model" and "'2'" in other.json()["error"]


async def test_unknown_paths_and_wrong_methods_are_json_404_and_405(gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url) as client:
        missing = await client.get("/v3/nothing")
        wrong = await client.get("/v2/models/textcls/infer")
    assert missing.status_code == 404 and missing.json() == {"error": "no route /v3/nothing", "code": "not_found"}
    assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"
    assert wrong.headers["allow"] == "POST" and wrong.headers["content-type"] == "application/json"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
async def test_a_body_that_is_not_json_by_its_content_type_gets_415(gateway_url: str, content_type: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url, headers=auth("acme")) as client:
        response = await client.post(
            "/v1/classify", content=b'{"texts": ["a"]}', headers={"content-type": content_type}
        )
    assert response.status_code == 415 and response.json()["code"] == "unsupported_media_type"
    assert content_type in response.json()["error"]


@pytest.mark.parametrize(
    ("tensor", "status"),
    [
        ({"name": "text", "shape": [2], "datatype": "BYTES", "data": [["a"], ["b"]]}, 422),  # nested for 1-D
        ({"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [["a"], ["b"]]}, 200),  # nested as the shape
        ({"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": ["a", "b"]}, 200),  # flat, row-major
        ({"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [["a", "b"]]}, 422),
        ({"name": "input_ids", "shape": [1, 4], "datatype": "INT64", "data": [[2, 5], [6, 3]]}, 422),  # [2][2]
        ({"name": "input_ids", "shape": [2, 2], "datatype": "INT64", "data": [[2, 5], [6, 3]]}, 200),
        ({"name": "input_ids", "shape": [2, 2], "datatype": "INT64", "data": [2, 5, 6, 3]}, 200),
    ],
)
async def test_tensor_data_must_match_its_shape_flat_or_nested_exactly(
    gateway_url: str, tensor: dict, status: int
) -> None:
    async with httpx.AsyncClient(base_url=gateway_url, headers=auth("acme")) as client:
        response = await client.post("/v2/models/textcls/infer", json={"inputs": [tensor]})
    assert response.status_code == status, response.text


async def test_metrics_and_metadata_need_the_admin_token_when_one_is_configured(tiny_model: Path) -> None:
    token = "ops-scraper-token"
    settings = make_settings(tiny_model, admin_token_sha256=[hashlib.sha256(token.encode()).hexdigest()])
    async with serve(create_app(settings, engines=[FakeEngine()])) as url, httpx.AsyncClient(base_url=url) as client:
        for path in ("/metrics", "/v2/models/textcls", "/v2", "/openapi.json"):
            refused = await client.get(path, headers=auth("acme"))  # a tenant key is not the admin token
            assert refused.status_code == 401 and refused.json()["code"] == "unauthorized", path
            allowed = await client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert allowed.status_code == 200, path
        assert (await client.get("/v2/health/ready")).status_code == 200  # probes stay open
        assert (await client.post("/v1/classify", headers=auth("acme"), json={"texts": ["a"]})).status_code == 200


async def test_an_admin_port_serves_metrics_and_metadata_and_the_main_port_does_not(tiny_model: Path) -> None:
    admin = free_socket()
    port = admin.getsockname()[1]
    app = create_app(make_settings(tiny_model, admin_port=port), engines=[FakeEngine()])
    with serve_in_thread(app, admin_sock=admin) as (url, _server):
        admin_url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client:
            for _ in range(200):
                if (await client.get(f"{url}/v2/health/ready")).status_code == 200:
                    break
            main_metrics = await client.get(f"{url}/metrics")
            admin_metrics = await client.get(f"{admin_url}/metrics")
            admin_meta = await client.get(f"{admin_url}/v2/models/textcls")
            admin_ready = await client.get(f"{admin_url}/v2/health/ready")
            admin_infer = await client.post(f"{admin_url}/v1/classify", headers=auth("acme"), json={"texts": ["a"]})
            main_infer = await client.post(f"{url}/v1/classify", headers=auth("acme"), json={"texts": ["a"]})
    admin.close()
    assert main_metrics.status_code == 404 and "admin port" in main_metrics.json()["error"]
    assert admin_metrics.status_code == 200 and "request_queue_length" in admin_metrics.text
    assert admin_meta.status_code == 200 and admin_ready.status_code == 200
    assert admin_infer.status_code == 404 and main_infer.status_code == 200
