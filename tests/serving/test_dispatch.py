"""serving.app.GatewayApp: the inference routes are dispatched straight to their endpoints, and a request
answered that way gets the same answer (status, body, headers) as through Starlette's router."""

from __future__ import annotations

from pathlib import Path

import httpx
from starlette.routing import Route

from serving.app import Endpoint, GatewayApp, create_app
from tests.serving.gateway_kit import FakeEngine, auth, make_settings, serve

REQUESTS = {  # name -> (path, headers, body)
    "served": ("/v1/classify", auth("acme"), {"texts": ["the kernel", "atoms"]}),
    "unauthorized": ("/v1/classify", {}, {"texts": ["the kernel"]}),
    "bad request": ("/v1/classify", auth("acme"), {"texts": []}),
    "no LLM engine": ("/v1/completions", auth("acme"), {"prompt": "hi", "max_tokens": 2}),
}
VARYING = {"date", "server-timing"}  # differ from response to response by nature


def test_every_fixed_path_inference_route_is_dispatched_directly(tiny_model: Path) -> None:
    app = create_app(make_settings(tiny_model), engines=[FakeEngine()])
    direct = {
        route.path
        for route in app.routes
        if isinstance(route, Route)
        and isinstance(route.endpoint, Endpoint)
        and route.endpoint.kind == "inference"
        and not route.param_convertors
    }
    assert direct == set(app.inference_routes) == {"/v1/classify", "/v1/completions", "/v1/chat/completions"}


async def _answers(app: GatewayApp) -> dict[str, tuple[int, dict, dict[str, str]]]:
    answers = {}
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        for name, (path, headers, body) in REQUESTS.items():
            response = await client.post(path, headers=headers, json=body)
            answers[name] = (
                response.status_code,
                response.json(),
                {key: value for key, value in response.headers.items() if key not in VARYING},
            )
            assert "server-timing" in response.headers, f"{name}: no Server-Timing header"
    return answers


async def test_a_dispatched_request_is_answered_as_through_the_router(tiny_model: Path) -> None:
    dispatched = create_app(make_settings(tiny_model), engines=[FakeEngine()])
    routed = create_app(make_settings(tiny_model), engines=[FakeEngine()])
    routed.inference_routes = {}  # every request takes Starlette's middleware and router
    first, second = await _answers(dispatched), await _answers(routed)
    assert [first[name][0] for name in REQUESTS] == [200, 401, 422, 404]
    assert first == second
