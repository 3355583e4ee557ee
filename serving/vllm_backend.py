"""Forward OpenAI-style requests to one or more vLLM OpenAI servers (the `vllm` engine of a deployment).

The gateway does admission (keys, token buckets, SLA classes); vLLM does batching and scheduling. The SLA
class reaches vLLM as the request's `priority` (vLLM `--scheduling-policy priority`: lower value first),
so a premium request overtakes queued batch requests inside the engine, not only in the gateway.

`pending(priority)` counts the requests forwarded at that priority that have not received their first
response byte yet (queued or prefilling in vLLM; a non-streamed answer's first byte is the whole answer):
the gateway exports it per SLA class as `request_queue_length` beside vLLM's own `num_requests_waiting`.

Failure handling: a connection failure marks that endpoint unhealthy and the request is retried once on
the next healthy endpoint; a periodic `GET /health` brings an endpoint back when it answers again, so a
restarted vLLM is used again without restarting the gateway. Anything unreachable becomes
`EngineUnavailable` (503 + Retry-After through `serving.errors.error_response`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import anyio
import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import Response, StreamingResponse

from serving.balancer import Balancer
from serving.errors import EngineUnavailable

log = logging.getLogger(__name__)

WAITING_METRIC = "vllm:num_requests_waiting"
# Before any response byte arrived: the request never reached a live engine, so one retry elsewhere is safe.
CONNECTION_FAILURES = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.NetworkError)


@dataclass(frozen=True)
class Usage:
    """Token counts vLLM reports for one request; the gateway charges completion_tokens to the tenant."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def from_openai(cls, usage: object) -> Usage | None:
        if not isinstance(usage, dict):
            return None
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        return cls(prompt, completion, int(usage.get("total_tokens") or prompt + completion))


UsageCallback = Callable[[Usage | None], None]


class UsageReport:
    """`on_usage(callback)`: the callback runs exactly once, with the final Usage (None if none came)."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.final = False
        self._callbacks: list[UsageCallback] = []

    def on_usage(self, callback: UsageCallback) -> None:
        if self.final:
            callback(self.usage)
        else:
            self._callbacks.append(callback)

    def finish(self, usage: Usage | None) -> None:
        if self.final:
            return
        self.usage, self.final = usage, True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(usage)


class VllmResponse(Response):
    """A non-streamed upstream answer, byte for byte; `.usage` is known at once."""

    def __init__(self, content: bytes, status_code: int, usage: Usage | None) -> None:
        super().__init__(content, status_code=status_code, media_type="application/json")
        self.report = UsageReport()
        self.report.finish(usage)

    @property
    def usage(self) -> Usage | None:
        return self.report.usage

    def on_usage(self, callback: UsageCallback) -> None:
        self.report.on_usage(callback)


class VllmStreamingResponse(StreamingResponse):
    """SSE relayed event by event; `.usage` is set when vLLM's final usage chunk has passed through."""

    def __init__(self, content: AsyncIterator[bytes], report: UsageReport) -> None:
        super().__init__(content, status_code=200, media_type="text/event-stream")
        self.report = report

    @property
    def usage(self) -> Usage | None:
        return self.report.usage

    def on_usage(self, callback: UsageCallback) -> None:
        self.report.on_usage(callback)


class VllmBackend:
    """A pool of vLLM OpenAI endpoints behind `serving.balancer.Balancer`.

    `forward()` returns a `VllmResponse` (stream=False) or `VllmStreamingResponse` (stream=True). Both
    have `.usage` (a `Usage` or None) and `.on_usage(callback)`: the callback is called exactly once with
    the final usage - immediately for a non-streamed answer, and when the stream ends for a streamed one
    (None if the stream ended without a usage chunk, e.g. the client went away). Streams always ask vLLM
    for `stream_options.include_usage`; the usage-only chunk is passed on only if the client asked for it.
    """

    def __init__(
        self,
        base_urls: list[str],
        *,
        model: str,
        timeout_s: float = 60.0,
        policy: str = "least_outstanding",
        health_interval_s: float = 2.0,
    ) -> None:
        if not base_urls:
            raise ValueError("VllmBackend needs at least one base URL; got []")
        if timeout_s <= 0:
            raise ValueError(f"VllmBackend timeout_s is {timeout_s}; must be > 0")
        if health_interval_s <= 0:
            raise ValueError(f"VllmBackend health_interval_s is {health_interval_s}; must be > 0")
        self.base_urls = [url.rstrip("/") for url in base_urls]
        self.model = model
        self.timeout_s = timeout_s
        self.health_interval_s = health_interval_s
        self.balancer: Balancer[str] = Balancer(self.base_urls, policy=policy, retry_after_s=health_interval_s)
        self._client: httpx.AsyncClient | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._pending: dict[int, int] = {}  # priority -> forwarded requests without a response byte yet

    def pending(self, priority: int) -> int:
        """Requests at `priority` forwarded to vLLM that have not received their first response byte."""
        return self._pending.get(priority, 0)

    def _settle(self, priority: int) -> None:
        self._pending[priority] -= 1

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the HTTP client, learn which endpoints are up now, then keep checking in the background."""
        if self._client is not None:
            return
        connect_s = min(5.0, self.timeout_s)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s, connect=connect_s),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
        )
        await self.check_health()
        self._health_task = asyncio.get_running_loop().create_task(self._health_loop(), name="vllm-health")

    async def close(self) -> None:
        task, self._health_task = self._health_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("VllmBackend.start() has not been awaited (or close() was)")
        return self._client

    # ------------------------------------------------------------------ health
    async def _probe(self, url: str) -> bool | None:
        """True: /health answered 200; False: refused or answered an error; None: no answer in time.

        A probe that times out says the server is busy (vLLM's API server shares the CPU with the engine,
        and on a saturated box /health can take seconds), not that it is gone: the endpoint keeps its state.
        A refused connection or an error status takes it out."""
        try:
            response = await self.client.get(f"{url}/health", timeout=min(2.0, self.timeout_s))
        except httpx.TimeoutException:
            return None
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def check_health(self) -> int:
        """Probe every endpoint once, update the balancer, return how many are healthy."""
        results = await asyncio.gather(*(self._probe(url) for url in self.base_urls))
        for url, probed in zip(self.base_urls, results, strict=True):
            healthy = self.balancer.is_healthy(url) if probed is None else probed
            if healthy != self.balancer.is_healthy(url):
                log.warning("vLLM endpoint %s is now %s", url, "healthy" if healthy else "unhealthy")
            self.balancer.mark_healthy(url, healthy)
        return sum(1 for url in self.base_urls if self.balancer.is_healthy(url))

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            await self.check_health()

    async def ready(self) -> bool:
        """True when at least one endpoint answers /health now (the gateway's readiness)."""
        return await self.check_health() > 0

    async def waiting_requests(self) -> float:
        """Sum of `vllm:num_requests_waiting` over the endpoints that answer /metrics."""

        async def scrape(url: str) -> float:
            try:
                response = await self.client.get(f"{url}/metrics", timeout=min(2.0, self.timeout_s))
                response.raise_for_status()
            except httpx.HTTPError:
                return 0.0
            return sum(
                sample.value
                for family in text_string_to_metric_families(response.text)
                for sample in family.samples
                if sample.name == WAITING_METRIC
            )

        return float(sum(await asyncio.gather(*(scrape(url) for url in self.base_urls))))

    # ------------------------------------------------------------------ forwarding
    def _payload(self, body: dict, priority: int, stream: bool) -> dict:
        payload = dict(body)
        payload["priority"] = priority
        payload["model"] = self.model
        payload["stream"] = stream
        if stream:
            payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        else:
            payload.pop("stream_options", None)
        return payload

    async def _send(self, path: str, payload: dict) -> tuple[str, httpx.Response, AsyncExitStack]:
        """Send to a healthy endpoint (retrying once elsewhere on a connection failure); headers received."""
        failures: list[str] = []
        for _attempt in range(2):
            stack = AsyncExitStack()
            url = await stack.enter_async_context(self.balancer.acquire())
            try:
                request = self.client.build_request("POST", f"{url}{path}", json=payload)
                response = await self.client.send(request, stream=True)
            except CONNECTION_FAILURES as error:
                await stack.aclose()
                self.balancer.mark_unhealthy(url)
                failures.append(f"{url}: {type(error).__name__}: {error}")
                log.warning("vLLM endpoint %s failed (%s); marked unhealthy", url, error)
                continue
            except httpx.TimeoutException as error:
                await stack.aclose()
                raise EngineUnavailable(
                    f"vLLM endpoint {url} timed out after {self.timeout_s} s on {path}", retry_after=self.timeout_s
                ) from error
            except BaseException:
                await stack.aclose()
                raise
            stack.push_async_callback(response.aclose)
            return url, response, stack
        raise EngineUnavailable(
            f"no vLLM endpoint reachable for {path}: {'; '.join(failures)}", retry_after=self.health_interval_s
        )

    async def forward(self, path: str, body: dict, *, priority: int, stream: bool) -> Response:
        """Forward `body` to `path` (e.g. /v1/completions) with the SLA priority and the served model name."""
        payload = self._payload(body, priority, stream)
        self._pending[priority] = self._pending.get(priority, 0) + 1
        settled = False
        try:
            url, upstream, stack = await self._send(path, payload)
            if not stream or upstream.status_code != 200:
                try:
                    content = await upstream.aread()
                except httpx.TimeoutException as error:
                    raise EngineUnavailable(
                        f"vLLM endpoint {url} timed out after {self.timeout_s} s on {path}", retry_after=self.timeout_s
                    ) from error
                except httpx.HTTPError as error:
                    self.balancer.mark_unhealthy(url)
                    raise EngineUnavailable(f"vLLM endpoint {url} failed mid-response: {error}") from error
                finally:
                    await stack.aclose()
                return VllmResponse(content, upstream.status_code, _usage_of(content))
            client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            report = UsageReport()
            settled = True  # the relay settles it at the first event (or when the stream ends without one)
            relay = self._relay(report, url, upstream, stack, client_wants_usage, priority)
            return VllmStreamingResponse(relay, report)
        finally:
            if not settled:
                self._settle(priority)

    async def _relay(
        self,
        report: UsageReport,
        url: str,
        upstream: httpx.Response,
        stack: AsyncExitStack,
        client_wants_usage: bool,
        priority: int,
    ) -> AsyncIterator[bytes]:
        found: list[Usage] = []
        waiting = True
        try:
            async for event in self._events(url, upstream):
                if waiting:
                    waiting = False
                    self._settle(priority)
                usage = _usage_of_event(event)
                if usage is not None:
                    found.append(usage)
                    if not client_wants_usage and _is_usage_only(event):
                        continue
                yield event
        finally:
            if waiting:
                self._settle(priority)
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            report.finish(found[-1] if found else None)

    async def _events(self, url: str, upstream: httpx.Response) -> AsyncIterator[bytes]:
        """Whole SSE events (`data: ...\\n\\n`); an upstream failure mid-stream ends with an error event."""
        buffer = b""
        try:
            async for chunk in upstream.aiter_raw():
                buffer += chunk
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    yield event + b"\n\n"
        except httpx.HTTPError as error:
            if not isinstance(error, httpx.TimeoutException):
                self.balancer.mark_unhealthy(url)
            message = {"error": {"message": f"vLLM endpoint {url} failed mid-stream: {error}", "code": 503}}
            yield b"data: " + json.dumps(message).encode() + b"\n\n"
            return
        if buffer.strip():
            yield buffer


def _usage_of(content: bytes) -> Usage | None:
    try:
        data = json.loads(content)
    except ValueError:
        return None
    return Usage.from_openai(data.get("usage")) if isinstance(data, dict) else None


def _event_data(event: bytes) -> dict | None:
    for line in event.splitlines():
        if line.startswith(b"data:"):
            text = line[5:].strip()
            if text == b"[DONE]":
                return None
            try:
                data = json.loads(text)
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


def _usage_of_event(event: bytes) -> Usage | None:
    data = _event_data(event)
    return Usage.from_openai(data.get("usage")) if data else None


def _is_usage_only(event: bytes) -> bool:
    data = _event_data(event)
    return bool(data) and not data.get("choices")
