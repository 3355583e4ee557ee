"""The worker's end of its link to the admission process (serving/admission.py): `AdmissionClient` is what
serving.app.Gateway calls instead of buckets, queue and engines in a multi-process gateway. The rows go over
the link and the logits, or a typed refusal rendered by the worker, come back; each request's deadline is also
armed here, so a client is answered 503 deadline_exceeded at its deadline even if the admission process is
slow to say so."""

from __future__ import annotations

import asyncio
import math
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Sequence

import numpy as np
import orjson

from serving.codec import Row
from serving.errors import EngineUnavailable, GatewayError
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
    decode_refused,
    decode_result,
    encode_done,
    encode_infer,
)
from serving.service import deadline_exceeded
from serving.tenancy import Tenancy, TenantContext

# A bucket hint is used only while it has this much margin left: it was computed on the admission
# process's loop clock, read a moment earlier than ours; the margin keeps the local 429 certain.
HINT_MARGIN_S = 0.001
QUERY_TIMEOUT_S = 2.0  # readiness waits this long for the admission process before answering not ready
METRICS_TIMEOUT_S = 10.0
U32 = 0xFFFFFFFF


class AdmissionClient(FrameProtocol):
    """The worker's end of its link: what serving.app.Gateway calls instead of buckets, queue and engines."""

    def __init__(self, sock: socket.socket, tenancy: Tenancy, tenants: Sequence[TenantContext], retry_after_s: float):
        super().__init__()
        self.sock = sock
        self.tenancy = tenancy
        self.retry_after_s = retry_after_s
        self.on_lost: Callable[[], None] | None = None
        self._index = {tenant.name: index for index, tenant in enumerate(tenants)}
        self._calls: dict[int, asyncio.Future] = {}
        self._next = 0
        self._hints: dict[int, float] = {}  # tenant index -> monotonic time its bucket is empty until
        self._inflight: Callable[[], int] = lambda: 0
        self._forwarded: Callable[[int], int] | None = None  # vLLM: forwarded, no first byte yet, by priority
        self._tenants = tuple(tenants)
        self.handlers = {
            RESULT: self._on_result,
            OK: self._on_ok,
            REFUSED: self._on_refused,
            HINT: self._on_hint,
            REPLY: self._on_reply,
            SYNC: self._on_sync,
        }

    async def connect(self, *, inflight: Callable[[], int], forwarded: Callable[[int], int] | None = None) -> None:
        """Open the link; `inflight()` is this worker's requests in flight and, for a vLLM deployment,
        `forwarded(priority)` its requests at that priority forwarded to vLLM without a first byte yet (both
        reported on every SYNC, so /metrics shows the sums over the workers)."""
        self._inflight = inflight
        self._forwarded = forwarded
        await asyncio.get_running_loop().create_unix_connection(lambda: self, sock=self.sock)

    def hello(self) -> None:
        """Tell the admission process this worker is serving."""
        self.send(HELLO, ID.pack(os.getpid()))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.fail_pending(
            EngineUnavailable("the gateway's engine process is gone; retry", retry_after=self.retry_after_s),
            cancel=False,
        )
        if self.on_lost is not None:
            self.on_lost()

    # ------------------------------------------------------------------ calls
    def _call(self) -> tuple[int, asyncio.Future]:
        if self.closed:
            raise EngineUnavailable("the gateway's engine process is gone; retry", retry_after=self.retry_after_s)
        self._next = (self._next + 1) & 0xFFFFFFFF
        assert self._loop is not None
        future = self._loop.create_future()
        self._calls[self._next] = future
        return self._next, future

    def _resolve(self, call_id: int, value: object = None, error: BaseException | None = None) -> None:
        future = self._calls.pop(call_id, None)
        if future is None or future.done():
            return  # answered already (its deadline here passed first) or given up
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def _give_up(self, call_id: int) -> None:
        if self._calls.pop(call_id, None) is not None:
            self.send(CANCEL, ID.pack(call_id))

    async def infer(self, rows: list[Row], tenant: TenantContext, arrival: float) -> np.ndarray:
        """The rows' logits from the admission process; a refusal there raises its GatewayError here."""
        call_id, future = self._call()
        self.send(INFER, encode_infer(call_id, arrival, self._index[tenant.name], rows))
        assert self._loop is not None
        timer = self._loop.call_at(arrival + tenant.timeout_s, self._expire, call_id, tenant)
        try:
            return await future
        except asyncio.CancelledError:
            self._give_up(call_id)
            raise
        finally:
            timer.cancel()

    def _expire(self, call_id: int, tenant: TenantContext) -> None:
        future = self._calls.get(call_id)
        if future is not None and not future.done():
            future.set_exception(deadline_exceeded(tenant, self.retry_after_s))
            self._give_up(call_id)

    def first_look(self, tenant: TenantContext, arrival: float) -> Awaitable[None] | None:
        """Before the body is read: a bucket known to be empty refuses here (429, no round trip); a
        `requests`-charged tenant then takes its unit in the admission process (await the result)."""
        index = self._index[tenant.name]
        until = self._hints.get(index)
        if until is not None:
            wait = until - time.monotonic()
            if wait > HINT_MARGIN_S:
                raise self.tenancy.rate_limited(tenant, wait)
            del self._hints[index]
        if tenant.charge != "requests":
            return None
        call_id, future = self._call()
        self.send(ADMIT, ADMIT_BODY.pack(call_id, arrival, index))
        return future

    async def admit_llm(self, tenant: TenantContext, arrival: float, rows: int, estimate: int) -> None:
        """A completion of a vLLM deployment: the admission process charges the rows/tokens request bucket
        and reserves the estimated prompt tokens (tokens_per_minute); a refusal raises its GatewayError."""
        call_id, future = self._call()
        self.send(LLM, LLM_BODY.pack(call_id, arrival, self._index[tenant.name], min(rows, U32), min(estimate, U32)))
        try:
            await future
        except asyncio.CancelledError:
            self._calls.pop(call_id, None)
            raise

    def usage(self, tenant: TenantContext, estimate: int, prompt: int, completion: int) -> None:
        """A completion's usage once known: the admission process corrects the tenant's token bucket and
        counts the tokens (infopt_tenant_tokens_total)."""
        clamp = lambda value: max(0, min(value, U32))  # noqa: E731  # the wire's u32; vLLM's own counts fit
        body = USAGE_BODY.pack(self._index[tenant.name], clamp(estimate), clamp(prompt), clamp(completion))
        self.send(USAGE, body)

    def count(self, tenant: TenantContext | None, status: str, reason: str | None, latency: float | None) -> None:
        index = NO_TENANT if tenant is None else self._index[tenant.name]
        self.send(DONE, encode_done(index, status, reason, latency))

    async def _query(self, op: bytes, timeout_s: float) -> bytes:
        call_id, future = self._call()
        self.send(QUERY, ID.pack(call_id) + op)
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        finally:
            self._calls.pop(call_id, None)

    async def readiness(self) -> tuple[bool, str | None]:
        try:
            answer = orjson.loads(await self._query(b"ready", QUERY_TIMEOUT_S))
        except TimeoutError:
            return False, f"the gateway's engine process did not answer within {QUERY_TIMEOUT_S:g} s"
        except GatewayError as error:
            return False, error.message
        return bool(answer["ready"]), answer["reason"]

    async def metrics(self, vllm_waiting: float | None = None) -> bytes:
        """The gateway's /metrics as the admission process renders it (after a SYNC of every worker);
        `vllm_waiting`: vLLM's waiting requests as this worker just read them (vLLM deployments)."""
        op = b"metrics" + WAITING.pack(math.nan if vllm_waiting is None else vllm_waiting)
        try:
            return await self._query(op, METRICS_TIMEOUT_S)
        except TimeoutError:
            raise EngineUnavailable(
                f"the gateway's engine process did not render its metrics within {METRICS_TIMEOUT_S:g} s",
                retry_after=self.retry_after_s,
            ) from None

    def fail_pending(self, error: GatewayError, *, cancel: bool = True) -> None:
        """Answer every call still waiting with `error` (the drain at the end of the grace, or a lost link)."""
        calls, self._calls = self._calls, {}
        for call_id, future in calls.items():
            if not future.done():
                future.set_exception(error)
            if cancel:
                self.send(CANCEL, ID.pack(call_id))

    # ------------------------------------------------------------------ frames from the admission process
    def _on_result(self, body: bytes) -> None:
        call_id, logits = decode_result(body)
        self._resolve(call_id, logits)

    def _on_ok(self, body: bytes) -> None:
        self._resolve(ID.unpack(body)[0])

    def _on_refused(self, body: bytes) -> None:
        call_id, error = decode_refused(body)
        self._resolve(call_id, error=error)

    def _on_hint(self, body: bytes) -> None:
        index, until = HINT_BODY.unpack(body)
        self._hints[index] = until

    def _on_reply(self, body: bytes) -> None:
        self._resolve(ID.unpack_from(body)[0], body[ID.size :])

    def _on_sync(self, body: bytes) -> None:
        (sync_id,) = ID.unpack(body)
        body = PONG_BODY.pack(sync_id, self._inflight())
        forwarded = self._forwarded
        if forwarded is not None:
            counts = [forwarded(tenant.priority) for tenant in self._tenants]
            body += struct.pack(f"<{len(counts)}I", *counts)
        self.send(PONG, body)
