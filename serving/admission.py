"""The admission process of a multi-process gateway (serving.workers >= 2): the one owner of the token
buckets, the weighted priority queue with its per-class deadlines, the batcher, the engine replicas and
the metrics, answering its HTTP worker processes over their links (serving/ipc.py).

Because every bucket, every queue and every counter lives here once, admission is exactly that of the
single-process gateway whatever the number of workers: a tenant's bucket is shared by all of them,
premium rows from any worker are dequeued before batch rows by the same weighted round robin, and a row
expires at its class deadline counted from its arrival at the worker (the clock is shared: see ipc.py).

Per request a worker sends INFER (the tokenized rows) and later DONE (the outcome it answered, counted
here once, after the answer was written). For a tenant charged per `requests`, the first look (one unit,
before the body is read) is an ADMIT round trip; for `rows` and `tokens` the first look takes nothing and
is repeated here on INFER, and a worker told by HINT that the bucket holds less than one unit refuses on
its own until refill could change that. /metrics first SYNCs every link, so each worker's DONEs sent
before the scrape are counted in it and the in-flight gauge is the workers' sum at that moment.

A vLLM deployment has no engine here (vLLM batches and queues itself; each worker forwards to it): the
admission process then owns only the buckets and the counters. A completion is one LLM round trip (the
rows/tokens request bucket and the tokens_per_minute reservation, as the single-process `_llm`), then
one USAGE frame (the token correction and infopt_tenant_tokens_total); /metrics sums the workers'
forwarded-but-unanswered requests per class into request_queue_length.

infopt_gateway_cpu_seconds_total adds the CPU of every live worker (its pid from HELLO) to this process's:
the workers do the parsing, tokenization and response encoding. A worker that ends keeps its last reading.

A worker that dies takes its connections with it: its requests still queued here are dropped and
counted `internal_error` (`worker_lost`); the supervisor (serving/supervisor.py) starts a new one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import struct
from functools import partial

import numpy as np
import orjson

from infopt.engines.base import Engine
from serving.errors import (
    EngineUnavailable,
    GatewayError,
    InternalError,
    RateLimited,
    WorkerLost,
)
from serving.ipc import (
    ADMIT,
    ADMIT_BODY,
    CANCEL,
    DONE,
    HELLO,
    HINT,
    HINT_BODY,
    ID,
    INFER,
    LLM,
    LLM_BODY,
    NO_TENANT,
    OK,
    PONG,
    PONG_BODY,
    QUERY,
    REFUSED,
    REPLY,
    RESULT,
    SYNC,
    USAGE,
    USAGE_BODY,
    WAITING,
    FrameProtocol,
    decode_done,
    decode_infer,
    encode_refused,
    encode_result,
)
from serving.metrics import GatewayMetrics
from serving.service import EngineFactory, ModelService, Pending, default_engine_factory, engine_readiness, load_service
from serving.settings import GatewaySettings
from serving.tenancy import Tenancy, TenantContext

log = logging.getLogger("infopt.gateway")
SYNC_TIMEOUT_S = 2.0  # a scrape waits this long for each worker's PONG; a worker that is stuck is left out


class WorkerLink(FrameProtocol):
    """The admission process's end of one worker's link: that worker's requests in flight, by call id."""

    def __init__(self, admission: Admission, index: int) -> None:
        super().__init__()
        self.admission = admission
        self.index = index
        self.requests: dict[int, Pending] = {}
        self.pid: int | None = None  # set by the worker's HELLO: it is serving
        self.inflight = 0  # the worker's requests in flight, as of its last PONG
        self.forwarded: tuple[int, ...] = ()  # vLLM: per tenant, forwarded without a first byte (last PONG)
        self.served = 0  # INFER frames received (how the kernel spread connections over the workers)
        self.syncs: dict[int, asyncio.Future[int]] = {}
        self.ended = asyncio.Event()  # the link closed: every frame the worker sent has been handled
        self.handlers = {
            INFER: partial(admission.on_infer, self),
            ADMIT: partial(admission.on_admit, self),
            CANCEL: partial(admission.on_cancel, self),
            DONE: admission.on_done,
            LLM: partial(admission.on_llm, self),
            USAGE: admission.on_usage,
            QUERY: partial(admission.on_query, self),
            PONG: self._on_pong,
            HELLO: self._on_hello,
        }

    def _on_hello(self, body: bytes) -> None:
        (self.pid,) = ID.unpack(body)
        log.info("worker %d (pid %d) is serving", self.index, self.pid)

    def _on_pong(self, body: bytes) -> None:
        sync_id, inflight = PONG_BODY.unpack_from(body)
        self.inflight = inflight
        extra = body[PONG_BODY.size :]
        self.forwarded = struct.unpack(f"<{len(extra) // 4}I", extra) if extra else ()
        future = self.syncs.pop(sync_id, None)
        if future is not None and not future.done():
            future.set_result(inflight)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for future in self.syncs.values():
            if not future.done():
                future.set_result(0)
        self.admission.link_lost(self)
        self.ended.set()


class Admission:
    """Buckets, queue, batcher, engines and counters of one model, serving the links of its workers."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        engines: list[Engine] | None = None,
        engine_factory: EngineFactory = default_engine_factory,
    ) -> None:
        self.settings = settings
        self.model = settings.model_name
        self.retry_after_s = settings.serving.retry_after_s
        self.metrics = GatewayMetrics(self.model)
        self.tenancy = Tenancy(settings.tenants, settings.sla_classes)
        self.contexts: list[TenantContext] = [self.tenancy.context(tenant.name) for tenant in settings.tenants]
        self.service: ModelService | None = None
        self.load_error: str | None = None
        self.draining = False
        self.links: list[WorkerLink] = []
        self.pending = 0  # requests queued or running here, over all links
        self._engines = engines
        self._engine_factory = engine_factory
        self._loader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_sync = 0
        self.metrics.model_ready.labels(self.model).set(0)
        self.metrics.inflight.labels(self.model).set_function(lambda: sum(link.inflight for link in self.links))
        # the workers do most of the per-request CPU: infopt_gateway_cpu_seconds_total counts them with us
        self.metrics.gateway_cpu.follow(lambda: [link.pid for link in self.links if link.pid is not None])

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loader = asyncio.get_running_loop().create_task(self._load(), name="model-loader")

    async def _load(self) -> None:
        if self.settings.engine == "vllm":  # vLLM batches and queues itself: here only buckets and counters
            self.metrics.model_ready.labels(self.model).set(1)
            return
        try:
            self.service = await load_service(
                self.settings, self.metrics, engines=self._engines, engine_factory=self._engine_factory
            )
            self.metrics.model_ready.labels(self.model).set(1)
            log.info("model %s ready (%s, %s)", self.model, self.settings.engine, self.settings.variant)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # as the single-process gateway: the reason goes to /ready and the log
            self.load_error = f"{type(error).__name__}: {error}"
            log.exception("model %s failed to load from %s", self.model, self.settings.model_dir)

    def readiness(self) -> tuple[bool, str | None]:
        if self.draining:
            return False, "shutting down"
        starting = sum(1 for link in self.links if link.pid is None)
        if starting:  # a probe answered by a loaded worker must not hide one that would answer 503 loading
            return False, f"{starting} of {len(self.links)} HTTP workers still starting"
        if self.settings.engine == "vllm":  # the workers probe vLLM's /health themselves
            return True, None
        loaded = self._loader is not None and self._loader.done()
        return engine_readiness(self.service, self.load_error, loaded)

    async def attach(self, sock: socket.socket, index: int) -> WorkerLink:
        """Serve the link of worker `index` on our end of its socketpair."""
        loop = asyncio.get_running_loop()
        _, link = await loop.create_unix_connection(lambda: WorkerLink(self, index), sock=sock)
        self.links.append(link)
        return link

    def begin_drain(self) -> None:
        """Out of readiness; the workers stop admitting, and what they already took in still runs."""
        self.draining = True
        self.metrics.model_ready.labels(self.model).set(0)

    async def stop_service(self) -> None:
        """End of the grace: queued and running rows are answered 503 shutting_down, the engines closed."""
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
            await asyncio.gather(self._loader, return_exceptions=True)
        if self.service is not None:
            await self.service.stop(0.0)
        for link in list(self.links):
            link.flush()

    # ------------------------------------------------------------------ requests
    def _service(self) -> ModelService:
        if self.service is None:
            reason = f"failed to load: {self.load_error}" if self.load_error else "is still loading"
            raise EngineUnavailable(f"model {self.model!r} {reason}", retry_after=self.retry_after_s)
        return self.service

    def _hint(self, link: WorkerLink, index: int, tenant: TenantContext, now: float) -> None:
        until = self.tenancy.empty_until(tenant, now)
        if until is not None:
            link.send(HINT, HINT_BODY.pack(index, until))

    def on_infer(self, link: WorkerLink, body: bytes) -> None:
        call_id, arrival, index, rows = decode_infer(body)
        link.served += 1
        tenant = self.contexts[index]
        try:
            service = self._service()
            now = asyncio.get_running_loop().time()
            try:
                if tenant.charge != "requests":  # the first look (a `requests` tenant had it by ADMIT)
                    self.tenancy.admit_request(tenant, now)
                self.tenancy.admit_cost(tenant, len(rows), sum(len(ids) for ids, _ in rows), now)
            finally:
                self._hint(link, index, tenant, now)
            pending = service.submit(rows, tenant, arrival, partial(self._answer, link, call_id))
        except GatewayError as error:
            link.send(REFUSED, encode_refused(call_id, error))
            return
        except Exception as error:  # a bug here must still answer the worker (its one error path logs nothing)
            log.exception("unexpected error admitting a request of tenant %s", tenant.name)
            failure = InternalError(f"internal error ({type(error).__name__}); the gateway logged it")
            link.send(REFUSED, encode_refused(call_id, failure))
            return
        link.requests[call_id] = pending
        self.pending += 1

    def _answer(self, link: WorkerLink, call_id: int, logits: np.ndarray | None, error: BaseException | None) -> None:
        if link.requests.pop(call_id, None) is None:
            return
        self.pending -= 1
        if logits is not None:
            link.send(RESULT, encode_result(call_id, logits))
            return
        if not isinstance(error, GatewayError):
            log.error("unexpected error answering a request", exc_info=error)
            error = InternalError(f"internal error ({type(error).__name__}); the gateway logged it")
        link.send(REFUSED, encode_refused(call_id, error))

    def on_admit(self, link: WorkerLink, body: bytes) -> None:
        call_id, _arrival, index = ADMIT_BODY.unpack(body)
        tenant = self.contexts[index]
        now = asyncio.get_running_loop().time()
        try:
            self.tenancy.admit_request(tenant, now)
        except RateLimited as error:
            link.send(REFUSED, encode_refused(call_id, error))
        else:
            link.send(OK, ID.pack(call_id))
        finally:
            self._hint(link, index, tenant, now)

    def on_llm(self, link: WorkerLink, body: bytes) -> None:
        """A completion of a vLLM deployment: the same charges as the single-process gateway's `_llm`."""
        call_id, _arrival, index, rows, estimate = LLM_BODY.unpack(body)
        link.served += 1
        tenant = self.contexts[index]
        now = asyncio.get_running_loop().time()
        try:
            if tenant.charge != "requests":  # the first look (a `requests` tenant had it by ADMIT)
                self.tenancy.admit_request(tenant, now)
            self.tenancy.admit_cost(tenant, rows, estimate, now)
            self.tenancy.admit_tokens(tenant, estimate, now)
        except GatewayError as error:
            link.send(REFUSED, encode_refused(call_id, error))
        else:
            link.send(OK, ID.pack(call_id))
        finally:
            self._hint(link, index, tenant, now)

    def on_usage(self, body: bytes) -> None:
        """A completion's usage: correct the token bucket by what the estimate missed, count the tokens."""
        index, estimate, prompt, completion = USAGE_BODY.unpack(body)
        tenant = self.contexts[index]
        self.tenancy.charge_tokens(tenant, prompt - estimate + completion, asyncio.get_running_loop().time())
        self.metrics.child(self.metrics.tenant_tokens, tenant.name, "prompt").inc(prompt)
        self.metrics.child(self.metrics.tenant_tokens, tenant.name, "completion").inc(completion)

    def on_cancel(self, link: WorkerLink, body: bytes) -> None:
        (call_id,) = ID.unpack(body)
        pending = link.requests.pop(call_id, None)
        if pending is not None:
            pending.cancel()
            self.pending -= 1

    def on_done(self, body: bytes) -> None:
        index, status, reason, latency = decode_done(body)
        if index == NO_TENANT:
            self.metrics.outcome(self.model, "unknown", "none", status, reason, latency)
        else:
            tenant = self.contexts[index]
            self.metrics.outcome(self.model, tenant.name, tenant.sla_class, status, reason, latency)

    def link_lost(self, link: WorkerLink) -> None:
        """A worker's link closed. Requests it still had here died with it: drop their rows, count them."""
        # its CPU since the last scrape, read while it is still listed (unless already reaped: then the last stands)
        self.metrics.gateway_cpu.observe()
        if link in self.links:
            self.links.remove(link)
        if not link.requests:
            return
        now = asyncio.get_running_loop().time()
        log.error("worker %d is gone with %d requests in flight", link.index, len(link.requests))
        for pending in link.requests.values():
            pending.cancel()
            self.pending -= 1
            first = pending.items[0]
            tenant = next(t for t in self.contexts if t.name == first.tenant)
            self.metrics.outcome(
                self.model, tenant.name, tenant.sla_class, "internal_error", WorkerLost.code, now - first.arrival
            )
        link.requests.clear()

    # ------------------------------------------------------------------ queries (probes, scrapes)
    def on_query(self, link: WorkerLink, body: bytes) -> None:
        (call_id,) = ID.unpack_from(body)
        op = body[ID.size :]
        if op == b"ready":
            ready, reason = self.readiness()
            link.send(REPLY, ID.pack(call_id) + orjson.dumps({"ready": ready, "reason": reason}))
        elif op.startswith(b"metrics"):
            waiting = WAITING.unpack_from(op, len(b"metrics"))[0] if len(op) > len(b"metrics") else math.nan
            task = asyncio.get_running_loop().create_task(self._scrape(link, call_id, waiting))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            link.send(REPLY, ID.pack(call_id) + orjson.dumps({"error": f"unknown query {op!r}"}))

    async def sync(self) -> None:
        """Every live worker answers a SYNC after all its earlier frames: its outcomes so far are counted and
        its in-flight count is current once this returns (a worker stuck past SYNC_TIMEOUT_S is left out)."""
        loop = asyncio.get_running_loop()
        waits = []
        for link in list(self.links):
            if link.closed:
                continue
            self._next_sync = (self._next_sync + 1) & 0xFFFFFFFF
            future: asyncio.Future[int] = loop.create_future()
            link.syncs[self._next_sync] = future
            link.send(SYNC, ID.pack(self._next_sync))
            waits.append(future)
        if waits:
            done, _ = await asyncio.wait(waits, timeout=SYNC_TIMEOUT_S)
            if len(done) < len(waits):
                log.warning("%d of %d workers did not answer the metrics sync", len(waits) - len(done), len(waits))

    async def _scrape(self, link: WorkerLink, call_id: int, vllm_waiting: float = math.nan) -> None:
        await self.sync()
        if self.settings.engine == "vllm":  # as the single-process gateway's /metrics, summed over the workers
            if not math.isnan(vllm_waiting):
                self.metrics.vllm_waiting.labels(self.model).set(vllm_waiting)
            for index, tenant in enumerate(self.contexts):
                forwarded = sum(link.forwarded[index] for link in self.links if index < len(link.forwarded))
                self.metrics.queue_length.labels(self.model, tenant.sla_class).set(forwarded)
        link.send(REPLY, ID.pack(call_id) + self.metrics.render())
