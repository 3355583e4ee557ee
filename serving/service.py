"""One served model: its codec, queue and batcher, and the request path: `infer(rows, tenant)` for a
caller that awaits (the single-process gateway), `submit(rows, tenant, arrival, on_done)` for one that
takes a callback (the admission process answering its HTTP workers, with no task per request).

The request waits for its rows until the class deadline on the loop clock; on timeout its rows are
taken out of the queue (or their results dropped) and the caller gets DeadlineExceeded, so a hung engine
never holds a request past its SLA class's timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import numpy as np

from infopt.engines.base import Engine
from infopt.params import BatchingParams, ServingParams, SlaClass
from serving.batcher import Batcher
from serving.codec import Codec, Row
from serving.errors import DeadlineExceeded, ShuttingDown
from serving.metrics import GatewayMetrics
from serving.queue import QueuedItem, RequestQueue
from serving.settings import GatewaySettings
from serving.tenancy import TenantContext

EngineFactory = Callable[[GatewaySettings], Sequence[Engine]]
# (logits, None) once every row is answered, or (None, error) at the first failure; called exactly once.
OnDone = Callable[[np.ndarray | None, BaseException | None], None]


def deadline_exceeded(tenant: TenantContext, retry_after_s: float) -> DeadlineExceeded:
    """The 503 of a request whose class deadline passed before its rows were answered."""
    return DeadlineExceeded(
        f"{tenant.sla_class} request not answered within its {tenant.timeout_s * 1000:.0f} ms deadline",
        retry_after=retry_after_s,
    )


class Pending:
    """One submitted request: its rows, its deadline timer and the callback that gets its answer."""

    __slots__ = ("finished", "items", "left", "on_done", "service", "timer")

    def __init__(self, service: ModelService, items: list[QueuedItem], on_done: OnDone) -> None:
        self.service = service
        self.items = items
        self.left = len(items)
        self.on_done = on_done
        self.timer: asyncio.TimerHandle | None = None
        self.finished = False

    def row_done(self, future: asyncio.Future) -> None:
        if self.finished or future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self._finish(None, error)
            return
        self.left -= 1
        if self.left == 0:
            items = self.items
            logits = (
                items[0].future.result()[np.newaxis]
                if len(items) == 1
                else np.stack([i.future.result() for i in items])
            )
            self._finish(logits, None)

    def _finish(self, logits: np.ndarray | None, error: BaseException | None) -> None:
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
        if error is not None:
            self.service._abandon(self.items)
        self.on_done(logits, error)

    def cancel(self) -> None:
        """The caller gave up (its worker left, or answered it already): drop the rows, call nobody."""
        if not self.finished:
            self.finished = True
            if self.timer is not None:
                self.timer.cancel()
            self.service._abandon(self.items)


class ModelService:
    def __init__(
        self,
        name: str,
        engines: Sequence[Engine],
        codec: Codec,
        *,
        sla_classes: Mapping[str, SlaClass],
        batching: BatchingParams,
        serving: ServingParams,
        metrics: GatewayMetrics,
        num_outputs: int | None = None,
    ) -> None:
        self.name = name
        self.codec = codec
        self.engines = list(engines)
        self.metrics = metrics
        self.retry_after_s = retry_after_s = serving.retry_after_s
        self.max_rows = batching.max_batch_size
        # Refusals are counted once per request where the request ends (Gateway.handle), not per row here.
        self.queue = RequestQueue(sla_classes, serving.queue_capacity, retry_after_s=retry_after_s)
        pad = np.full(2, codec.pad_id, dtype=np.int64)
        self.batcher = Batcher(
            self.queue,
            self.engines,
            batching,
            codec.collate,
            policy=serving.load_balancing,
            retry_after_s=retry_after_s,
            observer=self._batch_done,
            num_outputs=num_outputs,
            unhealthy_after=serving.unhealthy_after_failures,
            hang_s=serving.engine_hang_s,
            probe_interval_s=serving.health_probe_interval_s,
            probe_row=(pad, np.ones_like(pad)),
        )
        for sla_class in self.queue.classes:
            # read at scrape time, so queueing and batching pay no gauge update per row
            metrics.queue_length.labels(name, sla_class).set_function(partial(self.queue.size, sla_class))

    # ------------------------------------------------------------------ metrics hooks
    def _batch_done(self, items: list[QueuedItem], start: float, engine_seconds: float) -> None:
        metrics = self.metrics
        metrics.child(metrics.batch_size, self.name).observe(len(items))
        for item in items:
            metrics.child(metrics.queue_wait, self.name, item.sla_class).observe(start - item.arrival)
        if engine_seconds:
            share = engine_seconds / len(items)
            per_tenant: dict[str, float] = {}
            for item in items:
                per_tenant[item.tenant] = per_tenant.get(item.tenant, 0.0) + share
            for tenant, seconds in per_tenant.items():
                metrics.child(metrics.tenant_device_seconds, tenant).inc(seconds)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.batcher.start()

    async def stop(self, grace_s: float) -> None:
        """Refuse new rows, fail queued ones explicitly, let running batches finish within grace_s."""
        self.queue.close(ShuttingDown("the gateway is shutting down", retry_after=self.retry_after_s))
        await self.batcher.stop(grace_s)
        for engine in self.engines:
            engine.close()

    # ------------------------------------------------------------------ request path
    async def infer(self, rows: list[Row], tenant: TenantContext, arrival: float) -> np.ndarray:
        loop = asyncio.get_running_loop()
        deadline = arrival + tenant.timeout_s
        items = [
            QueuedItem(row, tenant.name, tenant.sla_class, arrival, deadline, loop.create_future()) for row in rows
        ]
        self.queue.put_many(items)
        # One timer that fails the rows at the deadline: cheaper per request than asyncio.timeout_at (a
        # context manager that cancels and un-cancels the task), and a one-row request awaits its future
        # directly instead of through gather().
        timer = loop.call_at(deadline, self._expire, items, tenant)
        try:
            if len(items) == 1:
                return (await items[0].future)[np.newaxis]
            return np.stack(await asyncio.gather(*(item.future for item in items)))
        except BaseException:
            self._abandon(items)
            raise
        finally:
            timer.cancel()

    def submit(self, rows: list[Row], tenant: TenantContext, arrival: float, on_done: OnDone) -> Pending:
        """Queue the rows (all or none: QueueFull/ShuttingDown raise here) and call `on_done` once with the
        logits or the first failure (DeadlineExceeded at arrival + the class timeout, as `infer`)."""
        loop = asyncio.get_running_loop()
        deadline = arrival + tenant.timeout_s
        items = [
            QueuedItem(row, tenant.name, tenant.sla_class, arrival, deadline, loop.create_future()) for row in rows
        ]
        self.queue.put_many(items)
        pending = Pending(self, items, on_done)
        pending.timer = loop.call_at(deadline, self._expire, items, tenant)
        for item in items:
            item.future.add_done_callback(pending.row_done)
        return pending

    def _expire(self, items: list[QueuedItem], tenant: TenantContext) -> None:
        error = deadline_exceeded(tenant, self.retry_after_s)
        for item in items:
            if not item.future.done():
                item.future.set_exception(error)

    def _abandon(self, items: list[QueuedItem]) -> None:
        for item in items:
            self.queue.abandon(item)
            if item.future.done() and not item.future.cancelled():
                item.future.exception()  # mark retrieved: the request already failed as a whole


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


async def load_service(
    settings: GatewaySettings,
    metrics: GatewayMetrics,
    *,
    engines: Sequence[Engine] | None = None,
    engine_factory: EngineFactory = default_engine_factory,
) -> ModelService:
    """Load the engine replicas (unless given) and the tokenizer in worker threads, then start the batcher:
    the one loading path of the single-process gateway and of the admission process."""
    if engines is None:
        engines = await asyncio.to_thread(engine_factory, settings)
    codec = await asyncio.to_thread(Codec, settings.tokenizer_dir, settings.max_seq_len)
    service = ModelService(
        settings.model_name,
        engines,
        codec,
        sla_classes=settings.sla_classes,
        batching=settings.batching,
        serving=settings.serving,
        metrics=metrics,
        num_outputs=len(settings.labels) or None,
    )
    service.start()
    return service


def engine_readiness(service: ModelService | None, load_error: str | None, loaded: bool) -> tuple[bool, str | None]:
    """(ready, why not) of an in-process engine: failed to load, still loading, or no healthy replica."""
    if load_error is not None:
        return False, f"model failed to load: {load_error}"
    if not loaded or service is None:
        return False, "model is still loading"
    batcher = service.batcher
    if batcher.healthy_count == 0:
        return False, "no healthy engine replica: " + "; ".join(batcher.unhealthy_reasons())
    return True, None
