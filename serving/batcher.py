"""Forms batches from the model's queue and runs them on engine replicas in worker threads.

dynamic: once a row is queued, wait until max_batch_size rows are there or the oldest row has waited
max_wait_ms, then cut at max_batch_size, else at the largest preferred size that is available, else take
what is there. static: wait for a full max_batch_size batch, but never past the earliest queued deadline
minus twice the recent batch time (so a lone request is still answered in time).

A replica runs one batch at a time (the Engine contract), so the batcher forms a batch only when a healthy
replica is free: rows that arrive meanwhile join the next, bigger batch. With no healthy replica at all,
queued rows fail at once with EngineUnavailable instead of waiting for their deadline.

Replica health: engine output is checked (shape (B, C), every logit finite); an exception or invalid
output fails the whole batch (503 engine_unavailable) and counts against the replica. After
`unhealthy_after` failures in a row, or while one batch runs longer than `hang_s`, the replica is out of
rotation; a one-row probe batch every `probe_interval_s` (or the hung batch returning valid output)
brings it back. `healthy_count` and `unhealthy_reasons` feed the gateway's readiness.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from infopt.engines.base import Engine, EngineError
from infopt.params import BatchingParams
from serving.balancer import Balancer
from serving.errors import EngineUnavailable, GatewayError, ShuttingDown
from serving.queue import QueuedItem, RequestQueue

log = logging.getLogger("infopt.gateway")
Collate = Callable[[Sequence[Any]], tuple[np.ndarray, np.ndarray]]
# A static batch flushes at least this long before the earliest queued deadline: timer wake-ups on a
# loaded 2-core box arrive tens of milliseconds late, and a late flush expires the row it waited for.
STATIC_MARGIN_S = 0.05
BatchObserver = Callable[[list[QueuedItem], float, float], None]  # (items, start, engine seconds)


def cut_size(available: int, batching: BatchingParams) -> int:
    """How many rows a closing dynamic window takes when `available` are queued."""
    if available >= batching.max_batch_size:
        return batching.max_batch_size
    fitting = [size for size in batching.preferred_batch_sizes if size <= available]
    return max(fitting) if fitting else available


def check_output(logits: Any, rows: int, num_outputs: int | None) -> np.ndarray:
    """The engine's answer as a (rows, C) finite float array, or EngineError saying what is wrong."""
    if not isinstance(logits, np.ndarray):
        raise EngineError(f"engine returned {type(logits).__name__}, not an array, for a batch of {rows} rows")
    expected = f"({rows}, {num_outputs if num_outputs else 'C'})"
    if logits.ndim != 2 or logits.shape[0] != rows or (num_outputs and logits.shape[1] != num_outputs):
        raise EngineError(
            f"engine returned shape {tuple(logits.shape)} for a batch of {rows} rows; expected {expected}"
        )
    if logits.dtype.kind != "f":
        raise EngineError(f"engine returned {logits.dtype} logits; expected floats")
    finite = np.isfinite(logits)
    if not finite.all():
        raise EngineError(f"engine returned {int(logits.size - finite.sum())} non-finite logits (NaN/Inf)")
    return logits


@dataclass
class ReplicaHealth:
    failures: int = 0  # failed batches in a row
    last_error: str | None = None
    hung_since: float | None = None  # perf_counter() when the running batch passed hang_s


class Batcher:
    def __init__(
        self,
        queue: RequestQueue,
        engines: Sequence[Engine],
        batching: BatchingParams,
        collate: Collate,
        *,
        policy: str = "least_outstanding",
        retry_after_s: float = 1.0,
        observer: BatchObserver | None = None,
        num_outputs: int | None = None,
        unhealthy_after: int = 3,
        hang_s: float = 10.0,
        probe_interval_s: float = 2.0,
        probe_row: Any = None,
    ) -> None:
        self.queue = queue
        self.batching = batching
        self.collate = collate
        self.retry_after_s = retry_after_s
        self.engines = list(engines)
        self.balancer: Balancer[Engine] = Balancer(self.engines, policy=policy, retry_after_s=retry_after_s, capacity=1)
        self.health = [ReplicaHealth() for _ in self.engines]
        self.num_outputs = num_outputs
        self.unhealthy_after = unhealthy_after
        self.hang_s = hang_s
        self.probe_interval_s = probe_interval_s
        self.probe_row = probe_row if probe_row is not None else (np.zeros(2, np.int64), np.ones(2, np.int64))
        self._observer = observer
        self._executor = ThreadPoolExecutor(max_workers=len(self.engines), thread_name_prefix="engine")
        self._replica_changed = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        self._batch_seconds = 0.0  # EWMA of engine time per batch, bounds the static wait

    # ------------------------------------------------------------------ health
    @property
    def healthy_count(self) -> int:
        return self.balancer.healthy_count

    def unhealthy_reasons(self) -> list[str]:
        reasons = []
        now = time.perf_counter()
        for index, (engine, health) in enumerate(zip(self.engines, self.health, strict=True)):
            if self.balancer.is_healthy(engine):
                continue
            if health.hung_since is not None:
                reasons.append(
                    f"replica {index}: batch running for {now - health.hung_since + self.hang_s:.0f} s (hung)"
                )
            else:
                reasons.append(f"replica {index}: {health.failures} failed batches in a row, last: {health.last_error}")
        return reasons

    def _index(self, engine: Engine) -> int:
        return next(i for i, item in enumerate(self.engines) if item is engine)

    def _set_healthy(self, engine: Engine, healthy: bool) -> None:
        if self.balancer.is_healthy(engine) != healthy:
            index = self._index(engine)
            if healthy:
                log.warning("engine replica %d is healthy again", index)
            else:
                log.error("engine replica %d taken out of rotation: %s", index, self.unhealthy_reasons_of(index))
            self.balancer.mark_healthy(engine, healthy)
        self._replica_changed.set()

    def unhealthy_reasons_of(self, index: int) -> str:
        health = self.health[index]
        if health.hung_since is not None:
            return f"batch running longer than {self.hang_s:g} s"
        return f"{health.failures} failed batches in a row, last: {health.last_error}"

    def _succeeded(self, engine: Engine) -> None:
        health = self.health[self._index(engine)]
        health.failures, health.last_error, health.hung_since = 0, None, None
        self._set_healthy(engine, True)

    def _failed(self, engine: Engine, error: BaseException) -> None:
        health = self.health[self._index(engine)]
        health.failures += 1
        health.last_error = f"{type(error).__name__}: {error}"
        health.hung_since = None
        if health.failures >= self.unhealthy_after:
            self._set_healthy(engine, False)
        else:
            self._replica_changed.set()

    def _hung(self, engine: Engine) -> None:
        self.health[self._index(engine)].hung_since = time.perf_counter()
        self._set_healthy(engine, False)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), name="batcher")
            self._prober = loop.create_task(self._probe_loop(), name="engine-prober")

    async def stop(self, grace_s: float) -> None:
        """Stop forming batches, let running ones finish within grace_s, then fail what is left."""
        for task in (self._task, self._prober):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._prober = None
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace_s)
        for task in set(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _wait_for_replica(self) -> None:
        """Until a healthy replica is free, or none is healthy (then queued rows fail fast)."""
        while self.balancer.healthy_count and not self.balancer.has_free():
            self._replica_changed.clear()
            await self._replica_changed.wait()

    async def _run(self) -> None:
        while True:
            await self._wait_for_replica()
            items = await self._next_batch()
            if not items:
                if self.queue.closed:
                    return
                continue
            try:
                engine = self.balancer.reserve()
            except EngineUnavailable as error:
                reasons = "; ".join(self.unhealthy_reasons())
                self._fail(items, EngineUnavailable(f"{error.message}: {reasons}", retry_after=self.retry_after_s))
                continue
            task = asyncio.get_running_loop().create_task(self._execute(items, engine))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next_batch(self) -> list[QueuedItem]:
        queue, batching = self.queue, self.batching
        loop = asyncio.get_running_loop()
        await queue.wait_for(1, None)
        now = loop.time()
        if batching.mode == "dynamic":
            oldest = queue.oldest_arrival(now)
            if oldest is None:
                return []
            await queue.wait_for(batching.max_batch_size, oldest + batching.max_wait_ms / 1000.0)
            return queue.take(cut_size(len(queue), batching), loop.time())
        deadline = queue.earliest_deadline(now)
        if deadline is None:
            return []
        await queue.wait_for(batching.max_batch_size, deadline - max(2 * self._batch_seconds, STATIC_MARGIN_S))
        return queue.take(batching.max_batch_size, loop.time())

    async def _infer(self, engine: Engine, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One batch on `engine` in its worker thread, watched for a hang; the checked logits."""
        loop = asyncio.get_running_loop()
        watchdog = loop.call_later(self.hang_s, self._hung, engine)
        try:
            logits = await loop.run_in_executor(self._executor, engine.infer, ids, mask)
        finally:
            watchdog.cancel()
        return check_output(logits, len(ids), self.num_outputs)

    async def _execute(self, items: list[QueuedItem], engine: Engine) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()  # the queue's clock (arrivals are loop.time()), for queue-wait histograms
        # Engine time by perf_counter: uvloop's loop.time() is libuv's millisecond clock, cached per loop
        # iteration, so a sub-millisecond batch would measure 0 s and bill its tenants nothing.
        began = time.perf_counter()
        engine_seconds = 0.0
        try:
            ids, mask = self.collate([item.payload for item in items])
            logits = await self._infer(engine, ids, mask)
            engine_seconds = time.perf_counter() - began
            self._succeeded(engine)
            for item, row in zip(items, logits, strict=True):
                if not item.future.done():
                    item.future.set_result(row)
        except GatewayError as error:
            self._fail(items, error)
        except asyncio.CancelledError:
            self._fail(
                items, ShuttingDown("the gateway stopped before this batch finished", retry_after=self.retry_after_s)
            )
            raise
        except Exception as error:  # EngineError, invalid output, or anything a third-party engine raises
            engine_seconds = time.perf_counter() - began
            self._failed(engine, error)
            self._fail(
                items,
                EngineUnavailable(
                    f"engine failed on a batch of {len(items)} rows: {error}", retry_after=self.retry_after_s
                ),
            )
        finally:
            self.balancer.release(engine)
            self._replica_changed.set()
            if engine_seconds:
                self._batch_seconds = (
                    engine_seconds if not self._batch_seconds else 0.8 * self._batch_seconds + 0.2 * engine_seconds
                )
            if self._observer is not None:
                self._observer(items, start, engine_seconds)

    async def _probe_loop(self) -> None:
        """Every probe_interval_s, a one-row batch on each unhealthy, idle replica; valid output heals it."""
        while True:
            await asyncio.sleep(self.probe_interval_s)
            for engine, health in zip(self.engines, self.health, strict=True):
                if self.balancer.is_healthy(engine) or self.balancer.outstanding(engine) or health.hung_since:
                    continue
                self.balancer.reserve_item(engine)
                try:
                    ids, mask = self.collate([self.probe_row])
                    await self._infer(engine, ids, mask)
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # the replica is still broken: keep it out, remember why
                    health.last_error = f"probe: {type(error).__name__}: {error}"
                else:
                    self._succeeded(engine)
                finally:
                    self.balancer.release(engine)
                    self._replica_changed.set()

    @staticmethod
    def _fail(items: list[QueuedItem], error: GatewayError) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(error)
