"""The gateway's Starlette app: v2 inference protocol, a simple classify endpoint, OpenAI-compatible LLM
routes (forwarded to vLLM), metrics and health.

Every request goes through `Gateway.handle`: drain check, authentication, rate limit, bounded body,
then the route's work; every GatewayError becomes a response in serving.errors.error_response, and every
outcome is counted. The model loads in the background so /v2/health/live answers at once and
/v2/health/ready only turns 200 once the engine is loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from infopt.engines.base import Engine
from serving.codec import Codec
from serving.errors import BadRequest, EngineUnavailable, GatewayError, ShuttingDown, UnknownModel, error_response
from serving.metrics import GatewayMetrics
from serving.openapi import openapi_document
from serving.protocol_v2 import infer_response, model_metadata, parse_classify, parse_infer, softmax
from serving.service import ModelService
from serving.settings import GatewaySettings
from serving.tenancy import Tenancy, TenantContext

log = logging.getLogger("infopt.gateway")
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "torch": "pytorch_torchscript", "vllm": "vllm"}
EngineFactory = Callable[[GatewaySettings], Sequence[Engine]]
Work = Callable[[bytes, TenantContext, float], Awaitable[Response]]


def default_engine_factory(settings: GatewaySettings) -> Sequence[Engine]:
    from infopt.engines.factory import load_replicas

    assert settings.model_dir is not None  # GatewaySettings enforces it for in-process engines
    return load_replicas(
        settings.engine,
        settings.model_dir,
        settings.serving.engine_replicas,
        device=settings.device,
        precision=settings.precision,
        threads=settings.engine_threads,
    )


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


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        engines: Sequence[Engine] | None = None,
        engine_factory: EngineFactory = default_engine_factory,
        vllm_backend: Any | None = None,
    ) -> None:
        self.settings = settings
        self.model = settings.model_name
        self.metrics = GatewayMetrics()
        self.tenancy = Tenancy(settings.tenants, settings.sla_classes)
        self.service: ModelService | None = None
        self.backend = vllm_backend
        self.load_error: str | None = None
        self.draining = False
        self.inflight = 0
        self._engines = list(engines) if engines is not None else None
        self._engine_factory = engine_factory
        self._loader: asyncio.Task[None] | None = None
        self._idle: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the serving loop, for callers in other threads
        self.metrics.model_ready.labels(self.model).set(0)
        # read at scrape time: no per-request gauge update
        self.metrics.inflight.labels(self.model).set_function(lambda: self.inflight)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._idle.set()
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
            else:
                engines = self._engines
                if engines is None:
                    engines = await asyncio.to_thread(self._engine_factory, settings)
                codec = await asyncio.to_thread(Codec, settings.tokenizer_dir, settings.max_seq_len)
                self.service = ModelService(
                    self.model,
                    engines,
                    codec,
                    sla_classes=settings.sla_classes,
                    batching=settings.batching,
                    queue_capacity=settings.serving.queue_capacity,
                    metrics=self.metrics,
                    policy=settings.serving.load_balancing,
                    retry_after_s=settings.serving.retry_after_s,
                )
                self.service.start()
            self.metrics.model_ready.labels(self.model).set(1)
            log.info("model %s ready (%s, %s)", self.model, settings.engine, settings.variant)
        except (OSError, ValueError, RuntimeError, ImportError, GatewayError) as error:
            self.load_error = f"{type(error).__name__}: {error}"
            log.error("model %s failed to load: %s", self.model, self.load_error)

    async def ready(self) -> bool:
        if self.draining or self.load_error is not None:
            return False
        if self.settings.engine == "vllm":
            return (
                self.backend is not None
                and self._loader is not None
                and self._loader.done()
                and await self.backend.ready()
            )
        return self.service is not None

    async def shutdown(self) -> None:
        """Stop admitting (503), let in-flight requests finish within shutdown_grace_s, then fail the rest."""
        self.draining = True
        self.metrics.model_ready.labels(self.model).set(0)
        loop = asyncio.get_running_loop()
        until = loop.time() + self.settings.serving.shutdown_grace_s
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
            await asyncio.gather(self._loader, return_exceptions=True)
        if self._idle is not None and self.inflight:
            try:
                async with asyncio.timeout_at(until):
                    await self._idle.wait()
            except TimeoutError:
                log.warning(
                    "%d requests still in flight after %.1f s; rejecting them",
                    self.inflight,
                    self.settings.serving.shutdown_grace_s,
                )
        if self.service is not None:
            await self.service.stop(max(0.0, until - loop.time()))
        if self.backend is not None:
            await self.backend.close()

    # ------------------------------------------------------------------ request path
    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.serving.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise BadRequest(f"body of {declared} bytes exceeds the limit of {limit} bytes", status=413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadRequest(f"body exceeds the limit of {limit} bytes", status=413)
            chunks.append(chunk)
        return b"".join(chunks)

    async def handle(self, request: Request, work: Work, *, model: str | None = None) -> Response:
        loop = asyncio.get_running_loop()
        arrival = loop.time()
        tenant: TenantContext | None = None
        status = "ok"
        self.inflight += 1
        if self._idle is not None:
            self._idle.clear()
        try:
            if self.draining:
                raise ShuttingDown("the gateway is shutting down", retry_after=self.settings.serving.retry_after_s)
            tenant = self.tenancy.authenticate(request.headers)
            if model is not None and model != self.model:
                raise UnknownModel(f"unknown model {model!r}; this gateway serves {self.model!r}")
            self.tenancy.admit_request(tenant, arrival)
            body = await self._read_body(request)
            return await work(body, tenant, arrival)
        except GatewayError as error:
            status = error.metric_status
            metrics = self.metrics
            metrics.child(metrics.rejections, self.model, tenant.name if tenant else "unknown", error.code).inc()
            return error_response(error)
        finally:
            self.inflight -= 1
            if self.inflight == 0 and self._idle is not None:
                self._idle.set()
            metrics = self.metrics
            name, sla_class = (tenant.name, tenant.sla_class) if tenant else ("unknown", "none")
            metrics.child(metrics.requests, self.model, name, sla_class, status).inc()
            if tenant is not None:
                metrics.child(metrics.request_latency, self.model, sla_class).observe(loop.time() - arrival)

    def _service(self) -> ModelService:
        if self.settings.engine == "vllm":
            raise UnknownModel(f"model {self.model!r} is served by vLLM; use /v1/completions or /v1/chat/completions")
        if self.service is None:
            reason = f"failed to load: {self.load_error}" if self.load_error else "is still loading"
            raise EngineUnavailable(f"model {self.model!r} {reason}", retry_after=self.settings.serving.retry_after_s)
        return self.service

    async def _infer(self, body: bytes, tenant: TenantContext, arrival: float, request: Request) -> Response:
        service = self._service()
        if "inference-header-content-length" in request.headers:
            raise BadRequest("the binary tensor extension is not supported; send JSON tensors (binary_data=False)")
        parsed = parse_infer(body, max_rows=service.max_rows)
        if parsed.texts is not None:
            rows = service.codec.encode(parsed.texts)
        else:
            rows = service.codec.rows_from_tokens(parsed.input_ids, parsed.attention_mask)  # type: ignore[arg-type]
        logits = await service.infer(rows, tenant, arrival)
        return JSONResponse(infer_response(self.model, parsed.request_id, logits, self.settings.labels, parsed.outputs))

    async def _classify(self, body: bytes, tenant: TenantContext, arrival: float) -> Response:
        service = self._service()
        texts = parse_classify(body, max_rows=service.max_rows)
        logits = await service.infer(service.codec.encode(texts), tenant, arrival)
        labels = self.settings.labels
        # one tolist() instead of a numpy scalar per value; max() keeps argmax's first-maximum tie rule
        results = [
            {
                "label": labels[max(range(len(row)), key=row.__getitem__)],
                "probabilities": dict(zip(labels, row, strict=True)),
            }
            for row in softmax(logits).tolist()
        ]
        return JSONResponse({"model": self.model, "results": results})

    async def _llm(self, path: str, body: bytes, tenant: TenantContext, arrival: float) -> Response:
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BadRequest(f"invalid JSON: {error}") from None
        if not isinstance(payload, dict):
            raise BadRequest(f"the body must be a JSON object, got {type(payload).__name__}", status=422)
        estimate = estimate_prompt_tokens(payload)
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
        now = asyncio.get_running_loop().time()
        self.tenancy.charge_tokens(tenant, prompt - estimate + completion, now)
        self.metrics.child(self.metrics.tenant_tokens, tenant.name, "prompt").inc(prompt)
        self.metrics.child(self.metrics.tenant_tokens, tenant.name, "completion").inc(completion)

    async def _counted_stream(
        self, chunks: AsyncIterator[Any], tenant: TenantContext, estimate: int
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


def run_server(
    app: Starlette, *, host: str, port: int, log_level: str, grace_s: float, access_log: bool = False
) -> None:
    """Serve `app` with uvicorn on its C event loop and HTTP parser (uvloop, httptools): the pure-Python
    h11 parser and asyncio loop cost several times more CPU per request, which a 2-core box pays in
    throughput. The access log (one formatted log line per request) is off unless asked for; the gateway's
    own metrics count every request."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        loop="uvloop",
        http="httptools",
        access_log=access_log,
        timeout_graceful_shutdown=grace_s,
    )


def create_app(
    settings: GatewaySettings,
    *,
    engines: Sequence[Engine] | None = None,
    engine_factory: EngineFactory = default_engine_factory,
    vllm_backend: Any | None = None,
) -> Starlette:
    """The gateway app; pass `engines` (already loaded) or let `engine_factory` load them in the background."""
    gateway = Gateway(settings, engines=engines, engine_factory=engine_factory, vllm_backend=vllm_backend)

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "infopt-gateway", "version": "0.1.0", "extensions": ["classify", "openai"]})

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        is_ready = await gateway.ready()
        body: dict[str, Any] = {"ready": is_ready}
        if gateway.load_error:
            body["error"] = gateway.load_error
        return JSONResponse(
            body, status_code=200 if is_ready else 503, headers={} if is_ready else {"Retry-After": "1"}
        )

    def _known(request: Request) -> str:
        name = request.path_params["model_name"]
        if name != gateway.model:
            raise UnknownModel(f"unknown model {name!r}; this gateway serves {gateway.model!r}")
        return name

    async def metadata(request: Request) -> Response:
        try:
            name = _known(request)
        except UnknownModel as error:
            return error_response(error)
        return JSONResponse(model_metadata(name, PLATFORMS[settings.engine], len(settings.labels)))

    async def model_ready(request: Request) -> Response:
        try:
            _known(request)
        except UnknownModel as error:
            return error_response(error)
        return await ready(request)

    async def infer(request: Request) -> Response:
        return await gateway.handle(
            request,
            lambda body, tenant, arrival: gateway._infer(body, tenant, arrival, request),
            model=request.path_params["model_name"],
        )

    async def classify(request: Request) -> Response:
        return await gateway.handle(request, gateway._classify)

    def llm(path: str) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            if settings.engine != "vllm":
                return error_response(
                    UnknownModel(f"no LLM engine configured: model {gateway.model!r} is served by {settings.engine}")
                )
            return await gateway.handle(
                request, lambda body, tenant, arrival: gateway._llm(path, body, tenant, arrival)
            )

        return route

    async def metrics(request: Request) -> Response:
        if gateway.backend is not None and gateway._loader is not None and gateway._loader.done():
            try:
                async with asyncio.timeout(1.0):
                    waiting = await gateway.backend.waiting_requests()
                gateway.metrics.vllm_waiting.labels(gateway.model).set(waiting)
            except (TimeoutError, OSError, GatewayError) as error:
                log.warning("could not read vLLM's waiting requests: %s", error)
            # the HPA's metric for a vLLM deployment: per class, forwarded requests without a response byte yet
            for tenant in gateway.tenancy.tenants:
                pending = gateway.backend.pending(tenant.priority)
                gateway.metrics.queue_length.labels(gateway.model, tenant.sla_class).set(pending)
        return Response(gateway.metrics.render(), media_type=gateway.metrics.content_type)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(gateway.model))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.shutdown()

    app = Starlette(
        routes=[
            Route("/v2", server_metadata, methods=["GET"]),
            Route("/v2/health/live", live, methods=["GET"]),
            Route("/v2/health/ready", ready, methods=["GET"]),
            Route("/v2/models/{model_name}", metadata, methods=["GET"]),
            Route("/v2/models/{model_name}/ready", model_ready, methods=["GET"]),
            Route("/v2/models/{model_name}/infer", infer, methods=["POST"]),
            Route("/v1/classify", classify, methods=["POST"]),
            Route("/v1/completions", llm("/v1/completions"), methods=["POST"]),
            Route("/v1/chat/completions", llm("/v1/chat/completions"), methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app
