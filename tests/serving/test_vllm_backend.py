"""VllmBackend against fake OpenAI upstreams (what is sent, balancing, failover) and a real vLLM server."""

from __future__ import annotations

import asyncio
import json
import os

import httpx
import pytest

from harness.vllm_process import VllmProcess
from serving.errors import EngineUnavailable, error_response
from serving.vllm_backend import Usage, VllmBackend, VllmResponse, VllmStreamingResponse
from tests.serving.gateway_kit import until
from tests.serving.vllm_fixtures import SERVED_MODEL, VLLM_TEST_CONTEXT, FakeUpstream, read_body, sse_events

# A request to the real server waits this long (a staged request in the priority test waits behind a blocker).
REAL_VLLM_TIMEOUT_S = 300.0


async def _backend(urls: list[str], timeout_s: float = 30.0, **kwargs: object) -> VllmBackend:
    backend = VllmBackend(urls, model=SERVED_MODEL, timeout_s=timeout_s, health_interval_s=0.2, **kwargs)
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


async def test_pending_counts_forwarded_requests_per_priority_until_their_first_byte(
    fake_upstreams: list[FakeUpstream],
) -> None:
    upstream = fake_upstreams[0]
    upstream.hold = asyncio.Event()
    backend = await _backend([upstream.url])
    try:
        plain = asyncio.create_task(backend.forward("/v1/completions", {"prompt": "a"}, priority=2, stream=False))
        streamed = asyncio.create_task(backend.forward("/v1/completions", {"prompt": "b"}, priority=0, stream=True))
        await until(lambda: len(upstream.bodies) == 2)  # both reached the upstream, neither was answered
        assert (backend.pending(0), backend.pending(1), backend.pending(2)) == (1, 0, 1)
        stream_response = await streamed  # headers came; the first event has not
        assert backend.pending(0) == 1
        upstream.hold.set()
        await plain
        assert backend.pending(2) == 0
        events = sse_events(await read_body(stream_response))
        assert events[-1] == "[DONE]" and backend.pending(0) == 0
    finally:
        await backend.close()


async def test_a_health_probe_that_times_out_keeps_a_busy_endpoint_but_a_refused_one_is_dropped() -> None:
    upstream = await FakeUpstream("busy").start()
    # timeout_s bounds the forwarded request too: 2 s leaves room for a slow box (the probe waits min(2, timeout_s))
    backend = VllmBackend([upstream.url], model=SERVED_MODEL, timeout_s=2.0, health_interval_s=60.0)
    await backend.start()
    try:
        upstream.health_hold = asyncio.Event()  # /health now hangs past the 2 s probe timeout
        assert await backend.check_health() == 1 and backend.balancer.is_healthy(upstream.url)
        response = await backend.forward("/v1/completions", {"prompt": "x"}, priority=1, stream=False)
        assert response.status_code == 200  # still served: busy is not gone
        upstream.health_hold.set()
        await upstream.stop()  # now the connection is refused
        assert await backend.check_health() == 0 and not backend.balancer.is_healthy(upstream.url)
    finally:
        await backend.close()


async def test_pending_is_released_when_the_upstream_is_unreachable() -> None:
    closed = FakeUpstream("closed")
    await closed.start()
    await closed.stop()
    backend = await _backend([closed.url])
    try:
        with pytest.raises(EngineUnavailable):
            await backend.forward("/v1/completions", {"prompt": "x"}, priority=1, stream=False)
        assert backend.pending(1) == 0
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
    backend = await _backend([vllm_server.base_url], timeout_s=REAL_VLLM_TIMEOUT_S)
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
    backend = await _backend([vllm_server.base_url], timeout_s=REAL_VLLM_TIMEOUT_S)
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
    backend = await _backend([vllm_server.base_url], timeout_s=REAL_VLLM_TIMEOUT_S)
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


@pytest.mark.vllm
def test_real_vllm_runs_every_process_and_thread_on_its_pinned_cpus(vllm_server: VllmProcess) -> None:
    """The API server, engine core, worker and their threads all stay on the pin (vLLM's own OpenMP binding
    included), so the cores left over are the clients' (see harness.vllm_process.engine_cpus)."""
    pinned = vllm_server.settings.cpus
    if not pinned:
        pytest.skip("a 1-CPU machine: the test server is not pinned")
    group = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if _group_of(pid) == vllm_server.pid]
    placements = {f"{pid}/{tid}": _affinity(int(tid)) for pid in group for tid in _threads_of(pid)}
    placements = {thread: cpus for thread, cpus in placements.items() if cpus is not None}  # still alive
    assert len(group) >= 3, group  # API server, engine core, worker (and vLLM's resource tracker)
    assert placements and all(cpus == set(pinned) for cpus in placements.values()), placements


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _affinity(tid: int) -> set[int] | None:
    try:
        return os.sched_getaffinity(tid)
    except ProcessLookupError:
        return None


def _threads_of(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []


def _gauge(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(f"{name}{{"))


async def _vllm_waiting(backend: VllmBackend, url: str) -> float:
    """vLLM's waiting gauge; a poll that times out (vLLM's API server fell behind its engine) reads -1."""
    try:
        text = (await backend.client.get(f"{url}/metrics", timeout=10.0)).text
    except httpx.TimeoutException:
        return -1.0
    return _gauge(text, "vllm:num_requests_waiting")


# Queued behind the blocker in this order: FCFS would serve low0-2 first, priority scheduling serves high first.
PRIORITY_STAGES = ((("low0", "low1", "low2"), 5), (("high",), 0), (("blocker1", "blocker2", "blocker3"), 1))
PRIORITY_TRIALS = 3


async def _priority_trial(backend: VllmBackend, url: str) -> list[str] | None:
    """One staging of PRIORITY_STAGES behind a blocker; the completion order, or None when the trial is void.

    A trial is void when a queued request completes before all seven are queued: the blocker ended on its own,
    which happens when vLLM's API server falls behind its engine for longer than the blocker runs (unpinned on
    2 cores it left /metrics polls waiting for most of a long generation: benchmarks/results/vllm_pinning.json;
    the tests' server is pinned, and a void trial is still never judged).
    """
    finished: list[str] = []
    tasks: list[asyncio.Task[None]] = []

    async def complete(tag: str, priority: int) -> None:
        body = {"prompt": f"request {tag}", "max_tokens": 8, "ignore_eos": True}
        response = await backend.forward("/v1/completions", body, priority=priority, stream=False)
        assert response.status_code == 200, response.body
        finished.append(tag)

    body = {"prompt": "blocker", "max_tokens": VLLM_TEST_CONTEXT - 16, "ignore_eos": True, "stream": True}
    blocker = await backend.forward("/v1/completions", body, priority=0, stream=True)
    chunks = blocker.body_iterator.__aiter__()
    loop = asyncio.get_running_loop()
    try:
        await chunks.__anext__()  # the blocker's first token: it holds the one sequence slot
        for tags, priority in PRIORITY_STAGES:
            tasks.extend(asyncio.create_task(complete(tag, priority)) for tag in tags)
            deadline = loop.time() + 60.0
            while await _vllm_waiting(backend, url) < len(tasks):
                if finished:
                    return None
                if loop.time() > deadline:
                    raise AssertionError(f"vLLM did not report {len(tasks)} waiting requests within 60 s")
                await asyncio.sleep(0.05)
        if finished:
            return None
        await chunks.aclose()  # the blocker's client goes away: vLLM aborts it and schedules the queue
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
        return finished
    finally:
        await chunks.aclose()
        if tasks:  # a void trial's requests still complete, so the next trial starts on an idle engine
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=120)


@pytest.mark.vllm
async def test_real_vllm_priority_scheduling_reorders_the_queue(vllm_server: VllmProcess) -> None:
    """With one sequence slot, queued requests are served by priority, not by arrival.

    Synchronised on the engine's own state instead of on timing: a priority-0 blocker that fills the context
    is streamed and its first token awaited (it holds the only slot); then three priority-5 requests are sent
    and the test waits until vLLM reports 3 waiting; then one priority-0 request (4 waiting), then three
    priority-1 requests (7 waiting). The blocker's client then goes away, which must abort it and free the
    slot; the completion order is the scheduler's alone: FCFS gives low0-2 first, priority scheduling gives
    high, blocker1-3, low0-2. A trial the box voids (see _priority_trial) is repeated, at most PRIORITY_TRIALS
    times; the order is asserted on a trial that staged all seven behind the blocker, never on a void one.
    """
    backend = await _backend([vllm_server.base_url], timeout_s=REAL_VLLM_TIMEOUT_S)
    try:
        orders = []
        for _ in range(PRIORITY_TRIALS):
            orders.append(await _priority_trial(backend, vllm_server.base_url))
            if orders[-1] is not None:
                break
        idle = await backend.waiting_requests()
    finally:
        await backend.close()
    finished = orders[-1]
    assert finished is not None, f"all {PRIORITY_TRIALS} trials void: the blocker always ended before staging"
    # by class: priority 0, then the three priority-1 requests, then the three priority-5 ones (within a class
    # the arrival order of concurrently sent requests is not controlled, so it is not asserted)
    assert finished[0] == "high", finished
    assert set(finished[1:4]) == {"blocker1", "blocker2", "blocker3"}, finished
    assert set(finished[4:]) == {"low0", "low1", "low2"}, finished
    assert idle == 0.0


@pytest.mark.vllm
async def test_real_vllm_death_gives_503_and_restart_is_served_again(vllm_server: VllmProcess) -> None:
    backend = await _backend([vllm_server.base_url], timeout_s=REAL_VLLM_TIMEOUT_S)
    body = {"prompt": "still there?", "max_tokens": 2}
    try:
        vllm_server.stop()
        with pytest.raises(EngineUnavailable) as raised:
            await backend.forward("/v1/completions", body, priority=1, stream=False)
        assert error_response(raised.value).status_code == 503
        assert backend.balancer.is_healthy(vllm_server.base_url) is False

        await asyncio.to_thread(vllm_server.start)  # same port; the backend object is never restarted
        await _wait_healthy(backend, vllm_server.base_url, timeout_s=60.0)
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
