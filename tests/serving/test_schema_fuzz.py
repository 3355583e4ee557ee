"""Fuzz the served OpenAPI document (v2 + classify) with schemathesis: no input may cause a 5xx."""

from __future__ import annotations

from pathlib import Path

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings

from serving.app import create_app
from serving.openapi import openapi_document
from tests.serving.gateway_kit import auth, make_settings, serve

SCHEMA = schemathesis.openapi.from_dict(openapi_document("textcls"))


async def test_openapi_document_is_served_and_names_the_endpoints(tiny_model: Path) -> None:
    async with serve(create_app(make_settings(tiny_model))) as url, httpx.AsyncClient(base_url=url) as client:
        served = (await client.get("/openapi.json")).json()
    assert set(served["paths"]) >= {"/v2/models/{model_name}/infer", "/v1/classify", "/v2/health/ready"}
    assert served["components"]["schemas"]["InferRequest"]["properties"]["inputs"]["minItems"] == 1


def test_fuzzed_requests_never_get_a_server_error(tiny_model: Path) -> None:
    import threading

    from tests.serving.gateway_kit import serve_in_thread

    app = create_app(make_settings(tiny_model, max_body_bytes=65536))
    failures: list[str] = []
    statuses: list[int] = []
    with serve_in_thread(app) as (url, _server):
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(200):
                if client.get("/v2/health/ready").status_code == 200:
                    break
                threading.Event().wait(0.05)
        for operation in SCHEMA.get_all_operations():
            strategy = operation.ok().as_strategy()

            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=strategy)
            def check(case: schemathesis.Case) -> None:
                response = case.call(base_url=url, headers=auth("acme"))
                statuses.append(response.status_code)
                if response.status_code >= 500 and response.status_code != 503:
                    failures.append(
                        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}"
                    )
                if response.status_code == 503:
                    assert response.json()["code"] in ("engine_unavailable", "queue_full", "deadline_exceeded"), (
                        response.text
                    )

            check()
    assert not failures, failures
    assert len(statuses) >= 50 and any(400 <= code < 500 for code in statuses)  # fuzzing really ran
