"""The gateway's Starlette app: v2 inference protocol, a simple classify endpoint, OpenAI-compatible LLM
routes (forwarded to vLLM), metrics and health.

Every inference request goes through `Gateway.serve`: drain check, authentication, content type, rate
limit, bounded body read (size and time), then the route's work; the response is written there too, so
the outcome is counted once, after the answer went out: a GatewayError becomes its JSON error
(serving.errors.error_response), anything else a logged 500 `internal`, and a client that went away is
counted `client_disconnected`, never ok. Limits that must hold before any of this (header size, count
and read time, connections) live in the HTTP protocol layer, serving/server.py.

The event loop does I/O and bookkeeping: a body above serving.offload_body_bytes is parsed, tokenized
(with the GIL released) and its answer encoded in a worker thread, and every text is first held to
serving.max_text_chars. The model loads in the background so /v2/health/live answers at once;
/v2/health/ready turns 200 once the engine is loaded and while a replica is healthy, and says why not.

With serving.workers >= 2 the same app runs in each HTTP worker process with a `link` to the admission
process (serving.admission_link.AdmissionClient): the worker authenticates, checks and tokenizes, and the link
carries the rows, the first look at the bucket, the outcome to count, readiness and /metrics to the one
process that owns the buckets, the queue, the batcher, the engines and the counters (serving.admission).
For a vLLM deployment each worker forwards completions to vLLM itself (vLLM batches and queues); the
link carries their bucket charges (rows/tokens, tokens_per_minute) and their usage to the admission
process, so a tenant's buckets and token counters stay one across the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from infopt.engines.base import Engine
from serving.codec import Codec, Row
from serving.errors import (
    BadRequest,
    ClientDisconnected,
    EngineUnavailable,
    GatewayError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    RequestTimeout,
    ShuttingDown,
    Unauthorized,
    UnknownModel,
    UnsupportedMediaType,
    error_response,
)
from serving.metrics import GatewayMetrics
from serving.openapi import openapi_document
from serving.protocol_v2 import infer_response, model_metadata, parse_classify, parse_infer, softmax
from serving.server import CYCLE_EXTENSION
from serving.service import EngineFactory, ModelService, default_engine_factory, engine_readiness, load_service
from serving.settings import GatewaySettings
from serving.tenancy import Tenancy, TenantContext
from serving.timing import ServerTiming

if TYPE_CHECKING:
    from serving.admission_link import AdmissionClient

__all__ = ["Gateway", "create_app", "default_engine_factory"]

# Reading vLLM's waiting count on each scrape: above the backend's own 2 s per-endpoint bound, so a vLLM busy
# generating on a loaded CPU still answers, and well under Prometheus' default 10 s scrape timeout.
VLLM_METRICS_TIMEOUT_S = 3.0

log = logging.getLogger("infopt.gateway")
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "torch": "pytorch_torchscript", "vllm": "vllm"}
MODEL_VERSION = "1"
Work = Callable[[bytes, TenantContext, float], Awaitable[Response]]
JSON = "application/json"


def estimate_prompt_tokens(payload: dict[str, Any]) -> int:
    """Rough prompt size (about 4 characters a token) for admission; upstream usage corrects it."""
    chars, pieces = 0, 0
    prompt = payload.get("prompt")
    for item in prompt if isinstance(prompt, list) else [prompt]:
        if isinstance(item, str):
            chars, pieces = chars + len(item), pieces + 1
    for message in payload.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        parts = content if isinstance(content, list) else [content]
        for part in parts:
            text = part.get("text") if isinstance(part, dict) else part
            if isinstance(text, str):
                chars, pieces = chars + len(text), pieces + 1
    return max(1, chars // 4 + 4 * pieces)


def prompt_rows(payload: dict[str, Any]) -> int:
    """Generations a completion request asks for: one per prompt of a batched `prompt` list, else one."""
    prompt = payload.get("prompt")
    return max(1, len(prompt)) if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt) else 1


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, headers=headers, media_type=JSON)


def check_content_type(headers: Any) -> None:
    """JSON bodies only: application/json or a +json type; a missing header is read as JSON (curl -d
    sends form encoding, which is refused with a message saying what to send)."""
    value = headers.get("content-type")
    if value is None:
        return
    media = value.split(";", 1)[0].strip().lower()
    if media != JSON and not media.endswith("+json"):
        raise UnsupportedMediaType(f"content type {media!r} is not supported; send 'Content-Type: {JSON}'")


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        engines: Sequence[Engine] | None = None,
        engine_factory: EngineFactory = default_engine_factory,
        vllm_backend: Any | None = None,
        link: AdmissionClient | None = None,
    ) -> None:
        self.settings = settings
        self.limits = settings.serving
        self.model = settings.model_name
        self.metrics = GatewayMetrics(self.model)
        self.tenancy = Tenancy(settings.tenants, settings.sla_classes)
        self.service: ModelService | None = None
        self.codec: Codec | None = None
        self.max_rows = settings.batching.max_batch_size
        self.link = link  # the admission process, when this process is one of serving.workers HTTP workers
        self.backend = vllm_backend
        self.load_error: str | None = None
        self.draining = False
        self.inflight = 0
        self._engines = list(engines) if engines is not None else None
        self._engine_factory = engine_factory
        self._loader: asyncio.Task[None] | None = None
        self._drain: asyncio.Task[None] | None = None
        self._idle: asyncio.Event | None = None
        # Parsing, tokenizing and encoding of large bodies; two threads: tokenizers release the GIL, and
        # a second request's parse should not wait behind one long tokenization.
        self._codec_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="codec")
        self.loop: asyncio.AbstractEventLoop | None = None  # the serving loop, for callers in other threads
        self.metrics.model_ready.labels(self.model).set(0)
        # read at scrape time: no per-request gauge update
        self.metrics.inflight.labels(self.model).set_function(lambda: self.inflight)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._idle.set()
        if self.link is not None:
            forwarded = None
            if self.settings.engine == "vllm":  # read at each SYNC, once the backend exists

                def forwarded(priority: int) -> int:
                    return 0 if self.backend is None else int(self.backend.pending(priority))

            await self.link.connect(inflight=lambda: self.inflight, forwarded=forwarded)
        self._loader = asyncio.get_running_loop().create_task(self._load(), name="model-loader")

    async def _load(self) -> None:
        settings = self.settings
        try:
            if settings.engine == "vllm":
                if self.backend is None:
                    from serving.vllm_backend import VllmBackend  # written beside this gateway; imported only for vLLM

                    self.backend = VllmBackend(
                        list(settings.vllm_urls),
                        model=settings.vllm_model or settings.variant,
                        timeout_s=settings.serving.vllm_timeout_s,
                        policy=settings.serving.load_balancing,
                    )
                await self.backend.start()
                if self.link is not None:  # buckets and counters are the admission process's; vLLM is ours
                    self.link.hello()
            elif self.link is not None:  # the engine is the admission process's; tokenizing is ours
                self.codec = await asyncio.to_thread(Codec, settings.tokenizer_dir, settings.max_seq_len)
                self.link.hello()
            else:
                self.service = await load_service(
                    settings, self.metrics, engines=self._engines, engine_factory=self._engine_factory
                )
                self.codec = self.service.codec
            self.metrics.model_ready.labels(self.model).set(1)
            log.info("model %s ready (%s, %s)", self.model, settings.engine, settings.variant)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # any loader failure: onnxruntime raises InvalidProtobuf/InvalidGraph/Fail,
            # which are not RuntimeErrors; torch and tokenizers raise their own. The reason goes to /ready.
            self.load_error = f"{type(error).__name__}: {error}"
            log.exception("model %s failed to load from %s", self.model, settings.model_dir)

    async def readiness(self) -> tuple[bool, str | None]:
        """(ready, why not): loading, failed to load, no healthy engine replica, or shutting down."""
        if self.draining:
            return False, "shutting down"
        loaded = self._loader is not None and self._loader.done()
        if self.load_error is not None or not loaded:
            return engine_readiness(None, self.load_error, loaded)
        if self.settings.engine == "vllm":
            if self.backend is None or not await self.backend.ready():
                return False, "no vLLM endpoint answers /health"
            return (True, None) if self.link is None else await self.link.readiness()
        if self.link is not None:
            return await self.link.readiness()
        return engine_readiness(self.service, None, loaded)

    def begin_drain(self) -> asyncio.Task[None]:
        """Stop admitting (503 shutting_down), let in-flight requests finish within shutdown_grace_s, then
        answer what is left with 503 shutting_down: called as the server starts shutting down, before it
        waits for (and finally cancels) its request tasks."""
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(self._drain_now(), name="drain")
        return self._drain

    async def _drain_now(self) -> None:
        self.draining = True
        self.metrics.model_ready.labels(self.model).set(0)
        grace = self.limits.shutdown_grace_s
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
            await asyncio.gather(self._loader, return_exceptions=True)
        if self._idle is not None and self.inflight:
            try:
                async with asyncio.timeout(grace):
                    await self._idle.wait()
            except TimeoutError:
                log.warning("%d requests still in flight after %.1f s; answering them 503", self.inflight, grace)
        if self.service is not None:
            await self.service.stop(0.0)  # queued and running rows get ShuttingDown now
        if self.link is not None:  # what still waits on the admission process is answered here now
            self.link.fail_pending(ShuttingDown("the gateway is shutting down", retry_after=self.limits.retry_after_s))
        if self._idle is not None and self.inflight:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # the handlers write their 503s
                    await self._idle.wait()

    async def shutdown(self) -> None:
        """Lifespan end: drain (if the server did not start it), then close the engine side."""
        await self.begin_drain()
        if self.backend is not None:
            await self.backend.close()
        if self.link is not None:
            self.link.close()
        self._codec_pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ accounting
    def count(self, tenant: TenantContext | None, status: str, error: GatewayError | None, arrival: float) -> None:
        """The request's outcome, once: here, or in the admission process that owns the counters."""
        reason = error.code if error is not None and not isinstance(error, ClientDisconnected) else None
        latency = asyncio.get_running_loop().time() - arrival if tenant is not None else None
        if self.link is not None:
            self.link.count(tenant, status, reason, latency)
            return
        name, sla_class = (tenant.name, tenant.sla_class) if tenant else ("unknown", "none")
        self.metrics.outcome(self.model, name, sla_class, status, reason, latency)

    def refused(self, error: GatewayError) -> None:
        """A refusal of the protocol layer (431, 408, connection limit): counted like any other."""
        self.count(None, error.metric_status, error, 0.0)

    # ------------------------------------------------------------------ request path
    async def _read_body(self, request: Request, receive: Receive) -> bytes:
        """The whole body, at most max_body_bytes (413) within body_timeout_s (408); a client that leaves
        meanwhile raises ClientDisconnected. The common case, a body that came with the headers, is one
        receive() without arming a timer."""
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise BadRequest(f"body of {declared} bytes exceeds the limit of {limit} bytes", status=413)
        chunks: list[bytes] = []
        size = 0
        # uvicorn's cycle (serving.server) knows when the whole body came with the headers: then receive()
        # cannot wait, and arming the body timer would only cost the request a timer
        cycle = request.scope.get("extensions", {}).get(CYCLE_EXTENSION, {}).get("cycle")
        complete = cycle is not None and getattr(cycle, "more_body", True) is False
        try:
            async with contextlib.nullcontext() if complete else asyncio.timeout(self.limits.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientDisconnected(f"client disconnected after {size} bytes of the body")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise BadRequest(f"body exceeds the limit of {limit} bytes", status=413)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise RequestTimeout(
                f"body not received within {self.limits.body_timeout_s:g} s ({size} bytes read)", code="body_timeout"
            ) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def serve(self, scope: Scope, receive: Receive, send: Send, work: Work, *, model: str | None = None) -> None:
        """One inference request, start to finish: admission, work, the answer written, the outcome counted."""
        loop = asyncio.get_running_loop()
        arrival = loop.time()
        request = Request(scope, receive)
        tenant: TenantContext | None = None
        failure: GatewayError | None = None
        status = "ok"
        self.inflight += 1
        if self._idle is not None:
            self._idle.clear()
        try:
            try:
                if self.draining:
                    raise ShuttingDown("the gateway is shutting down", retry_after=self.limits.retry_after_s)
                headers = request.headers
                tenant = self.tenancy.authenticate(headers)
                if model is not None and model != self.model:
                    raise UnknownModel(f"unknown model {model!r}; this gateway serves {self.model!r}")
                check_content_type(headers)
                if self.link is None:
                    self.tenancy.admit_request(tenant, arrival)
                else:  # the bucket is the admission process's: a known-empty bucket is refused here
                    waiter = self.link.first_look(tenant, arrival)
                    if waiter is not None:
                        await waiter
                body = await self._read_body(request, receive)
                response = await work(body, tenant, arrival)
            except GatewayError as error:
                failure = error
            except Exception as error:
                log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
                failure = InternalError(f"internal error ({type(error).__name__}); the gateway logged it")
            if failure is not None:
                status = failure.metric_status
                response = error_response(failure)
            if not isinstance(failure, ClientDisconnected):
                await response(scope, receive, send)
                cycle = scope.get("extensions", {}).get(CYCLE_EXTENSION, {}).get("cycle")
                if cycle is not None and cycle.disconnected:
                    status = "client_disconnected"
        except asyncio.CancelledError:
            status = "shutting_down"  # the server cancelled the request: it got no answer
            raise
        finally:
            self.inflight -= 1
            if self.inflight == 0 and self._idle is not None:
                self._idle.set()
            self.count(tenant, status, failure, arrival)

    def _codec(self) -> Codec:
        if self.settings.engine == "vllm":
            raise UnknownModel(f"model {self.model!r} is served by vLLM; use /v1/completions or /v1/chat/completions")
        if self.codec is None:
            reason = f"failed to load: {self.load_error}" if self.load_error else "is still loading"
            raise EngineUnavailable(f"model {self.model!r} {reason}", retry_after=self.limits.retry_after_s)
        return self.codec

    def _limit_texts(self, texts: list[str]) -> tuple[list[str], list[bool]]:
        """Hold each text to serving.max_text_chars: cut (and flag) or refuse, per text_limit_action."""
        limit = self.limits.max_text_chars
        cut = [len(text) > limit for text in texts]
        if not any(cut):
            return texts, cut
        if self.limits.text_limit_action == "reject":
            index = cut.index(True)
            raise BadRequest(
                f"text {index} has {len(texts[index])} characters; the limit is {limit} "
                "(serving.max_text_chars, text_limit_action reject)",
                status=413,
                code="text_too_long",
            )
        return [text[:limit] if long else text for text, long in zip(texts, cut, strict=True)], cut

    def _tokenize(self, codec: Codec, texts: list[str]) -> tuple[list[Row], list[bool]]:
        texts, cut = self._limit_texts(texts)
        rows, overflow = codec.encode(texts)
        return rows, [a or b for a, b in zip(cut, overflow, strict=True)]

    async def _off_loop(self, offload: bool, function: Callable[..., Any], *args: Any) -> Any:
        if not offload:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self._codec_pool, function, *args)

    async def _rows_to_logits(self, rows: list[Row], tenant: TenantContext, arrival: float) -> np.ndarray:
        if self.link is not None:  # the admission process charges the bucket, queues, batches, answers
            return await self.link.infer(rows, tenant, arrival)
        service = self.service
        assert service is not None  # _codec() passed: loaded
        now = asyncio.get_running_loop().time()
        self.tenancy.admit_cost(tenant, len(rows), sum(len(ids) for ids, _ in rows), now)
        return await service.infer(rows, tenant, arrival)

    async def _infer(self, body: bytes, tenant: TenantContext, arrival: float, request: Request) -> Response:
        codec = self._codec()
        if "inference-header-content-length" in request.headers:
            raise BadRequest("the binary tensor extension is not supported; send JSON tensors (binary_data=False)")
        offload = len(body) > self.limits.offload_body_bytes

        def prepare() -> tuple[Any, list[Row], list[bool] | None]:
            parsed = parse_infer(body, max_rows=self.max_rows)
            if parsed.texts is not None:
                rows, truncated = self._tokenize(codec, parsed.texts)
                return parsed, rows, truncated
            rows = codec.rows_from_tokens(parsed.input_ids, parsed.attention_mask)  # type: ignore[arg-type]
            return parsed, rows, None

        parsed, rows, truncated = await self._off_loop(offload, prepare)
        logits = await self._rows_to_logits(rows, tenant, arrival)

        def encode() -> bytes:
            content = infer_response(
                self.model, parsed.request_id, logits, self.settings.labels, parsed.outputs, truncated
            )
            return orjson.dumps(content)

        return Response(await self._off_loop(offload, encode), media_type=JSON)

    async def _classify(self, body: bytes, tenant: TenantContext, arrival: float) -> Response:
        codec = self._codec()
        offload = len(body) > self.limits.offload_body_bytes

        def prepare() -> tuple[list[Row], list[bool]]:
            return self._tokenize(codec, parse_classify(body, max_rows=self.max_rows))

        rows, truncated = await self._off_loop(offload, prepare)
        logits = await self._rows_to_logits(rows, tenant, arrival)
        labels = self.settings.labels

        def encode() -> bytes:
            # one tolist() instead of a numpy scalar per value; max() keeps argmax's first-maximum tie rule
            results = [
                {
                    "label": labels[max(range(len(row)), key=row.__getitem__)],
                    "probabilities": dict(zip(labels, row, strict=True)),
                    "truncated": cut,
                }
                for row, cut in zip(softmax(logits).tolist(), truncated, strict=True)
            ]
            return orjson.dumps({"model": self.model, "results": results})

        return Response(await self._off_loop(offload, encode), media_type=JSON)

    async def _llm(self, path: str, body: bytes, tenant: TenantContext, arrival: float) -> Response:
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BadRequest(f"invalid JSON: {error}") from None
        if not isinstance(payload, dict):
            raise BadRequest(f"the body must be a JSON object, got {type(payload).__name__}", status=422)
        estimate = estimate_prompt_tokens(payload)
        if self.link is not None:  # the same two charges, on the buckets the admission process owns
            await self.link.admit_llm(tenant, arrival, prompt_rows(payload), estimate)
        else:
            self.tenancy.admit_cost(tenant, prompt_rows(payload), estimate, arrival)  # rows/tokens request buckets
            self.tenancy.admit_tokens(tenant, estimate, arrival)
        stream = bool(payload.get("stream"))
        if stream:
            payload.setdefault("stream_options", {"include_usage": True})
        response = await self.backend.forward(path, payload, priority=tenant.priority, stream=stream)  # type: ignore[union-attr]
        if isinstance(response, StreamingResponse):
            response.body_iterator = self._counted_stream(response.body_iterator, tenant, estimate)
        else:
            usage = None
            try:
                usage = json.loads(bytes(response.body)).get("usage")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                usage = None
            self._account_tokens(tenant, estimate, usage)
        return response

    def _account_tokens(self, tenant: TenantContext, estimate: int, usage: Any) -> None:
        usage = usage if isinstance(usage, dict) else {}
        prompt = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else estimate
        completion = usage.get("completion_tokens") if isinstance(usage.get("completion_tokens"), int) else 0
        if self.link is not None:
            self.link.usage(tenant, estimate, prompt, completion)
            return
        now = asyncio.get_running_loop().time()
        self.tenancy.charge_tokens(tenant, prompt - estimate + completion, now)
        self.metrics.child(self.metrics.tenant_tokens, tenant.name, "prompt").inc(prompt)
        self.metrics.child(self.metrics.tenant_tokens, tenant.name, "completion").inc(completion)

    async def _counted_stream(
        self, chunks: AsyncIterable[Any], tenant: TenantContext, estimate: int
    ) -> AsyncIterator[Any]:
        """Pass SSE chunks through and charge the usage of the final chunk once the stream ends."""
        usage: Any = None
        pending = ""
        try:
            async for chunk in chunks:
                pending += chunk.decode("utf-8", "replace") if isinstance(chunk, bytes | bytearray) else str(chunk)
                *lines, pending = pending.split("\n")
                for line in lines:
                    if line.startswith("data:") and '"usage"' in line:
                        with contextlib.suppress(json.JSONDecodeError):  # a partial data line carries no usage
                            usage = json.loads(line[5:].strip()).get("usage") or usage
                yield chunk
        finally:
            self._account_tokens(tenant, estimate, usage)

    # ------------------------------------------------------------------ admin (metrics, metadata)
    def check_admin(self, scope: Scope, headers: Any) -> None:
        """/metrics and metadata: only on the admin port when one is set, and only with an admin token
        when serving.admin_token_sha256 lists any."""
        admin_port = self.limits.admin_port
        if admin_port is not None and (scope.get("server") or (None, None))[1] != admin_port:
            raise NotFound(f"{scope.get('path')} is served on the admin port only")
        digests = self.limits.admin_token_sha256
        if digests:
            authorization = headers.get("authorization") or ""
            scheme, _, token = authorization.partition(" ")
            digest = hashlib.sha256(token.strip().encode()).hexdigest() if scheme.lower() == "bearer" else ""
            if not any(hmac.compare_digest(digest, stored) for stored in digests):
                raise Unauthorized("this endpoint needs the admin token: 'Authorization: Bearer <admin token>'")

    def on_admin_port(self, scope: Scope) -> bool:
        port = self.limits.admin_port
        return port is not None and (scope.get("server") or (None, None))[1] == port


class Endpoint:
    """An ASGI endpoint of the gateway: `kind` inference (Gateway.serve), admin or open (health)."""

    def __init__(self, gateway: Gateway, handler: Callable[..., Awaitable[Any]], kind: str) -> None:
        self.gateway, self.handler, self.kind = gateway, handler, kind

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        if self.kind == "inference":
            if gateway.on_admin_port(scope):
                await self._refuse(
                    NotFound(f"{scope.get('path')} is not served on the admin port"), scope, receive, send
                )
                return
            await self.handler(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            if self.kind == "admin":
                gateway.check_admin(scope, request.headers)
            response = await self.handler(request)
        except GatewayError as error:
            await self._refuse(error, scope, receive, send)
            return
        await response(scope, receive, send)

    async def _refuse(self, error: GatewayError, scope: Scope, receive: Receive, send: Send) -> None:
        self.gateway.count(None, error.metric_status, error, 0.0)
        await error_response(error)(scope, receive, send)


class GatewayApp(Starlette):
    """Starlette with the inference routes dispatched first, straight to their endpoints.

    An inference request is the traffic: through Starlette's error and exception middleware and its router it
    pays several awaited layers it never needs (`Gateway.serve` answers every error itself, the path is
    fixed). Only exact paths of `POST` go this way; everything else (405 on a wrong method, path
    parameters, admin routes) takes Starlette's path as before. Both paths carry the Server-Timing header."""

    def __init__(self, *args: Any, inference_routes: dict[str, Endpoint], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inference_routes = {path: ServerTiming(endpoint) for path, endpoint in inference_routes.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.inference_routes.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(
    settings: GatewaySettings,
    *,
    engines: Sequence[Engine] | None = None,
    engine_factory: EngineFactory = default_engine_factory,
    vllm_backend: Any | None = None,
    link: AdmissionClient | None = None,
) -> GatewayApp:
    """The gateway app; pass `engines` (already loaded) or let `engine_factory` load them in the background,
    or (an HTTP worker of serving.workers) a `link` to the admission process that owns them."""
    gateway = Gateway(settings, engines=engines, engine_factory=engine_factory, vllm_backend=vllm_backend, link=link)

    async def server_metadata(request: Request) -> Response:
        return json_response({"name": "infopt-gateway", "version": "0.1.0", "extensions": ["classify", "openai"]})

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        is_ready, reason = await gateway.readiness()
        if is_ready:
            return json_response({"ready": True})
        return json_response({"ready": False, "reason": reason}, status=503, headers={"Retry-After": "1"})

    def _known(request: Request) -> str:
        name = request.path_params["model_name"]
        if name != gateway.model:
            raise UnknownModel(f"unknown model {name!r}; this gateway serves {gateway.model!r}")
        version = request.path_params.get("version")
        if version is not None and version != MODEL_VERSION:
            raise UnknownModel(f"model {name!r} has no version {version!r}; its versions are [{MODEL_VERSION!r}]")
        return name

    async def metadata(request: Request) -> Response:
        name = _known(request)
        return json_response(model_metadata(name, PLATFORMS[settings.engine], len(settings.labels)))

    async def model_ready(request: Request) -> Response:
        _known(request)
        return await ready(request)

    async def infer(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)

        async def work(body: bytes, tenant: TenantContext, arrival: float) -> Response:
            _known(request)
            return await gateway._infer(body, tenant, arrival, request)

        await gateway.serve(scope, receive, send, work, model=scope["path_params"]["model_name"])

    async def classify(scope: Scope, receive: Receive, send: Send) -> None:
        await gateway.serve(scope, receive, send, gateway._classify)

    def llm(path: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        async def work(body: bytes, tenant: TenantContext, arrival: float) -> Response:
            if settings.engine != "vllm":
                raise UnknownModel(f"no LLM engine configured: model {gateway.model!r} is served by {settings.engine}")
            return await gateway._llm(path, body, tenant, arrival)

        async def route(scope: Scope, receive: Receive, send: Send) -> None:
            await gateway.serve(scope, receive, send, work)

        return route

    async def metrics(request: Request) -> Response:
        waiting = None
        if gateway.backend is not None and gateway._loader is not None and gateway._loader.done():
            try:
                async with asyncio.timeout(VLLM_METRICS_TIMEOUT_S):
                    waiting = await gateway.backend.waiting_requests()
                gateway.metrics.vllm_waiting.labels(gateway.model).set(waiting)
            except (TimeoutError, OSError, GatewayError) as error:
                log.warning("could not read vLLM's waiting requests: %s", error)
        if gateway.link is not None:  # the counters live in the admission process (and see every worker)
            return Response(await gateway.link.metrics(waiting), media_type=gateway.metrics.content_type)
        if gateway.backend is not None and gateway._loader is not None and gateway._loader.done():
            # the HPA's metric for a vLLM deployment: per class, forwarded requests without a response byte yet
            for tenant in gateway.tenancy.tenants:
                pending = gateway.backend.pending(tenant.priority)
                gateway.metrics.queue_length.labels(gateway.model, tenant.sla_class).set(pending)
        return Response(gateway.metrics.render(), media_type=gateway.metrics.content_type)

    async def openapi(request: Request) -> Response:
        return json_response(openapi_document(gateway.model))

    async def http_error(request: Request, exc: Exception) -> Response:
        """Starlette's routing refusals (no route, wrong method) as JSON errors, counted."""
        assert isinstance(exc, HTTPException)
        error: GatewayError
        if exc.status_code == 405:
            allowed = tuple(part.strip() for part in (exc.headers or {}).get("Allow", "").split(",") if part.strip())
            error = MethodNotAllowed(f"method {request.method} is not allowed on {request.url.path}", allowed=allowed)
        elif exc.status_code == 404:
            error = NotFound(f"no route {request.url.path}")
        else:
            error = (
                BadRequest(str(exc.detail)) if exc.status_code in (400, 413, 422) else InternalError(str(exc.detail))
            )
        gateway.count(None, error.metric_status, error, 0.0)
        return error_response(error)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        error = InternalError(f"internal error ({type(exc).__name__}); the gateway logged it")
        gateway.count(None, error.metric_status, error, 0.0)
        return error_response(error)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.shutdown()

    def routes(model_prefix: str) -> list[Route]:
        return [
            Route(model_prefix, Endpoint(gateway, metadata, "admin"), methods=["GET"]),
            Route(f"{model_prefix}/ready", Endpoint(gateway, model_ready, "open"), methods=["GET"]),
            Route(f"{model_prefix}/infer", Endpoint(gateway, infer, "inference"), methods=["POST"]),
        ]

    inference = {
        "/v1/classify": Endpoint(gateway, classify, "inference"),
        "/v1/completions": Endpoint(gateway, llm("/v1/completions"), "inference"),
        "/v1/chat/completions": Endpoint(gateway, llm("/v1/chat/completions"), "inference"),
    }
    app = GatewayApp(
        inference_routes=inference,
        routes=[  # matched in order: the inference routes first, they carry the traffic
            *(Route(path, endpoint, methods=["POST"]) for path, endpoint in inference.items()),
            Route("/v2", Endpoint(gateway, server_metadata, "admin"), methods=["GET"]),
            Route("/v2/health/live", Endpoint(gateway, live, "open"), methods=["GET"]),
            Route("/v2/health/ready", Endpoint(gateway, ready, "open"), methods=["GET"]),
            *routes("/v2/models/{model_name}"),
            *routes("/v2/models/{model_name}/versions/{version}"),
            Route("/metrics", Endpoint(gateway, metrics, "admin"), methods=["GET"]),
            Route("/openapi.json", Endpoint(gateway, openapi, "admin"), methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        middleware=[Middleware(ServerTiming)],  # Server-Timing: gateway;dur=<ms> on every response
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app
