"""VllmBackend against fake OpenAI upstreams (what is sent, balancing, failover) and a real vLLM server."""

from __future__ import annotations

import asyncio
import json

import pytest

from harness.vllm_process import VllmProcess
from serving.errors import EngineUnavailable, error_response
from serving.vllm_backend import Usage, VllmBackend, VllmResponse, VllmStreamingResponse
from tests.serving.vllm_fixtures import SERVED_MODEL, FakeUpstream, read_body, sse_events


async def _backend(urls: list[str], **kwargs: object) -> VllmBackend:
    backend = VllmBackend(urls, model=SERVED_MODEL, timeout_s=30.0, health_interval_s=0.2, **kwargs)
    await backend.start()
    return backend


async def _wait_healthy(backend: VllmBackend, url: str, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not backend.balancer.is_healthy(url):
        if loop.time() > deadline:
            raise AssertionError(f"{url} not marked healthy again within {timeout_s} s")
        await asyncio.sleep(0.1)


# ----------------------------------------------------------------------------- fake upstreams
async def test_priority_and_served_model_are_set_on_the_forwarded_body(fake_upstreams: list[FakeUpstream]) -> None:
    upstream = fake_upstreams[0]
    backend = await _backend([upstream.url])
    try:
        body = {"model": "whatever-the-client-said", "prompt": "hi", "max_tokens": 2}
        response = await backend.forward("/v1/completions", body, priority=2, stream=False)
    finally:
        await backend.close()
    assert isinstance(response, VllmResponse)
    assert response.status_code == 200
    assert upstream.bodies == [{"model": SERVED_MODEL, "prompt": "hi", "max_tokens": 2, "priority": 2, "stream": False}]
    assert response.usage == Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    assert json.loads(response.body)["usage"]["completion_tokens"] == 2


async def test_round_robin_alternates_between_two_upstreams(fake_upstreams: list[FakeUpstream]) -> None:
    backend = await _backend([u.url for u in fake_upstreams], policy="round_robin")
    try:
        texts = []
        for _ in range(6):
            response = await backend.forward("/v1/completions", {"prompt": "x"}, priority=1, stream=False)
            texts.append(json.loads(response.body)["choices"][0]["text"])
    finally:
        await backend.close()
    assert texts == ["from a", "from b"] * 3
    assert [len(u.bodies) for u in fake_upstreams] == [3, 3]


async def test_stream_asks_for_usage_reports_it_and_hides_the_usage_chunk_unless_asked(
    fake_upstreams: list[FakeUpstream],
) -> None:
    upstream = fake_upstreams[0]
    backend = await _backend([upstream.url])
    seen: list[Usage | None] = []
    try:
        response = await backend.forward("/v1/completions", {"prompt": "x"}, priority=0, stream=True)
        assert isinstance(response, VllmStreamingResponse)
        response.on_usage(seen.append)
        plain = sse_events(await read_body(response))
        asked = await backend.forward(
            "/v1/completions", {"prompt": "x", "stream_options": {"include_usage": True}}, priority=0, stream=True
        )
        with_usage = sse_events(await read_body(asked))
    finally:
        await backend.close()
    assert all(body["stream_options"] == {"include_usage": True} and body["stream"] for body in upstream.bodies)
    assert seen == [Usage(3, 2, 5)] and response.usage == Usage(3, 2, 5)
    assert plain[-1] == "[DONE]" and all('"usage"' not in event for event in plain)
    assert with_usage[-1] == "[DONE]" and json.loads(with_usage[-2])["usage"]["completion_tokens"] == 2


async def test_connection_failure_marks_the_endpoint_unhealthy_and_retries_the_next(
    fake_upstreams: list[FakeUpstream],
) -> None:
    alive = fake_upstreams[0]
    dead = FakeUpstream("dead")
    await dead.start()
    await dead.stop()  # a port that was just closed: connection refused
    backend = await _backend([dead.url, alive.url], policy="round_robin")
    backend.balancer.mark_healthy(dead.url)  # as if it died after the last health check
    try:
        response = await backend.forward("/v1/completions", {"prompt": "x"}, priority=1, stream=False)
    finally:
        await backend.close()
    assert response.status_code == 200
    assert json.loads(response.body)["choices"][0]["text"] == "from a"
    assert backend.balancer.is_healthy(dead.url) is False
    assert len(alive.bodies) == 1


async def test_dead_endpoint_gives_503_then_serves_again_without_restarting_the_backend() -> None:
    upstream = await FakeUpstream("solo").start()
    backend = await _backend([upstream.url])
    try:
        await upstream.stop()
        with pytest.raises(EngineUnavailable) as raised:
            await backend.forward("/v1/completions", {"prompt": "x"}, priority=1, stream=False)
        refused = error_response(raised.value)
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
        assert await backend.ready() is False

        revived = await FakeUpstream("solo", port=upstream.port).start()
        try:
            await _wait_healthy(backend, upstream.url, timeout_s=5.0)
            response = await backend.forward("/v1/completions", {"prompt": "x"}, priority=1, stream=False)
            assert response.status_code == 200 and len(revived.bodies) == 1
            assert await backend.ready() is True
        finally:
            await revived.stop()
    finally:
        await backend.close()


async def test_waiting_requests_sums_the_metric_over_endpoints(fake_upstreams: list[FakeUpstream]) -> None:
    fake_upstreams[0].waiting, fake_upstreams[1].waiting = 2.0, 5.0
    backend = await _backend([u.url for u in fake_upstreams])
    try:
        assert await backend.waiting_requests() == 7.0
    finally:
        await backend.close()


# ----------------------------------------------------------------------------- real vLLM
@pytest.mark.vllm
async def test_real_vllm_completion_charges_the_generated_tokens(vllm_server: VllmProcess) -> None:
    backend = await _backend([vllm_server.base_url])
    try:
        body = {"prompt": "The computer said", "max_tokens": 8, "ignore_eos": True, "temperature": 0}
        response = await backend.forward("/v1/completions", body, priority=1, stream=False)
    finally:
        await backend.close()
    data = json.loads(response.body)
    assert response.status_code == 200, data
    assert data["model"] == SERVED_MODEL
    assert isinstance(data["choices"][0]["text"], str)
    assert response.usage is not None and response.usage.completion_tokens == 8
    assert response.usage.total_tokens == response.usage.prompt_tokens + 8


@pytest.mark.vllm
async def test_real_vllm_chat_completion_uses_the_chat_template(vllm_server: VllmProcess) -> None:
    backend = await _backend([vllm_server.base_url])
    try:
        body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "ignore_eos": True}
        response = await backend.forward("/v1/chat/completions", body, priority=0, stream=False)
    finally:
        await backend.close()
    data = json.loads(response.body)
    assert response.status_code == 200, data
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["role"] == "assistant"
    # <|bos|><|user|>\nhello<|eos|>\n<|assistant|>\n: several prompt tokens beyond the word itself
    assert data["usage"]["prompt_tokens"] >= 5 and data["usage"]["completion_tokens"] == 4


@pytest.mark.vllm
async def test_real_vllm_stream_yields_sse_chunks_ending_with_done(vllm_server: VllmProcess) -> None:
    backend = await _backend([vllm_server.base_url])
    try:
        body = {"prompt": "Once upon a time", "max_tokens": 6, "ignore_eos": True}
        response = await backend.forward("/v1/completions", body, priority=2, stream=True)
        events = sse_events(await read_body(response))
    finally:
        await backend.close()
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert len(chunks) >= 2 and all(chunk["choices"] for chunk in chunks)  # usage-only chunk withheld
    assert response.usage is not None and response.usage.completion_tokens == 6


PRIORITY_ATTEMPTS = 3


def _priority_order_held(finished: list[str]) -> bool:
    """high (priority 0) next to blocker0, then the priority-1 blockers, then the priority-5 requests."""
    return (
        set(finished[:2]) == {"blocker0", "high"}
        and set(finished[2:5]) == {"blocker1", "blocker2", "blocker3"}
        and set(finished[5:]) == {"low0", "low1", "low2"}
    )


@pytest.mark.vllm
async def test_real_vllm_priority_scheduling_reorders_the_queue(vllm_server: VllmProcess) -> None:
    """With one sequence slot, a priority-0 request sent after priority-5 ones is served before them.

    One long priority-1 request, then three priority-5 requests, one priority-0 request and three more
    priority-1 requests are sent back to back, in that order. FCFS would serve the priority-5 ones right after
    blocker0; vLLM's priority scheduler serves priority 0, then 1, then 5 (high may even start before blocker0
    if all arrive in one scheduler step). On a 2-core box the API server can be starved while the engine
    computes and then admit requests in a different grouping than they were sent, so the scenario gets up to
    three attempts; an FCFS scheduler fails every one of them, since the priority-5 requests are sent first.
    """
    backend = await _backend([vllm_server.base_url])
    orders: list[list[str]] = []

    async def complete(tag: str, priority: int, tokens: int, finished: list[str]) -> None:
        body = {"prompt": f"request {tag}", "max_tokens": tokens, "ignore_eos": True}
        response = await backend.forward("/v1/completions", body, priority=priority, stream=False)
        assert response.status_code == 200, response.body
        finished.append(tag)

    arrivals = [("blocker0", 1, 480)] + [(f"low{i}", 5, 16) for i in range(3)] + [("high", 0, 16)]
    arrivals += [(f"blocker{i}", 1, 16) for i in range(1, 4)]
    try:
        for _attempt in range(PRIORITY_ATTEMPTS):
            finished: list[str] = []
            tasks = [
                asyncio.create_task(complete(tag, priority, tokens, finished)) for tag, priority, tokens in arrivals
            ]
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
            orders.append(finished)
            if _priority_order_held(finished):
                break
        metrics = (await backend.client.get(f"{vllm_server.base_url}/metrics")).text
        idle = await backend.waiting_requests()
    finally:
        await backend.close()
    assert "vllm:num_requests_waiting" in metrics  # the gauge the gateway re-exports for the HPA
    assert idle == 0.0
    assert _priority_order_held(orders[-1]), f"completion orders of {len(orders)} attempts: {orders}"


@pytest.mark.vllm
async def test_real_vllm_death_gives_503_and_restart_is_served_again(vllm_server: VllmProcess) -> None:
    backend = await _backend([vllm_server.base_url])
    body = {"prompt": "still there?", "max_tokens": 2}
    try:
        vllm_server.stop()
        with pytest.raises(EngineUnavailable) as raised:
            await backend.forward("/v1/completions", body, priority=1, stream=False)
        assert error_response(raised.value).status_code == 503
        assert backend.balancer.is_healthy(vllm_server.base_url) is False

        await asyncio.to_thread(vllm_server.start)  # same port; the backend object is never restarted
        await _wait_healthy(backend, vllm_server.base_url, timeout_s=10.0)
        response = await backend.forward("/v1/completions", body, priority=1, stream=False)
        assert response.status_code == 200
    finally:
        await backend.close()
        if not vllm_server.running:
            vllm_server.start()


async def test_unreachable_metrics_count_as_zero_waiting() -> None:
    closed = FakeUpstream("closed")
    await closed.start()
    await closed.stop()
    backend = await _backend([closed.url])
    try:
        assert await backend.waiting_requests() == 0.0
        assert await backend.ready() is False
    finally:
        await backend.close()
    with pytest.raises(RuntimeError, match="start"):
        _ = backend.client
