"""Forms batches from the model's queue and runs them on engine replicas in worker threads.

dynamic: once a row is queued, wait until max_batch_size rows are there or the oldest row has waited
max_wait_ms, then cut at max_batch_size, else at the largest preferred size that is available, else take
what is there. static: wait for a full max_batch_size batch, but never past the earliest queued deadline
minus twice the recent batch time (so a lone request is still answered in time).

A replica runs one batch at a time (the Engine contract), so the batcher holds one slot per replica and
only forms a batch when a replica is free: rows that arrive meanwhile join the next, bigger batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from infopt.engines.base import Engine, EngineError
from infopt.params import BatchingParams
from serving.balancer import Balancer
from serving.errors import EngineUnavailable, GatewayError, ShuttingDown
from serving.queue import QueuedItem, RequestQueue

Collate = Callable[[Sequence[Any]], tuple[np.ndarray, np.ndarray]]
STATIC_MARGIN_S = 0.01  # a static batch flushes at least this long before the earliest queued deadline
BatchObserver = Callable[[list[QueuedItem], float, float], None]  # (items, start, engine seconds)


def cut_size(available: int, batching: BatchingParams) -> int:
    """How many rows a closing dynamic window takes when `available` are queued."""
    if available >= batching.max_batch_size:
        return batching.max_batch_size
    fitting = [size for size in batching.preferred_batch_sizes if size <= available]
    return max(fitting) if fitting else available


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
    ) -> None:
        self.queue = queue
        self.batching = batching
        self.collate = collate
        self.retry_after_s = retry_after_s
        self.balancer: Balancer[Engine] = Balancer(
            list(engines), policy=policy, retry_after_s=retry_after_s, capacity=1
        )
        self._observer = observer
        self._executor = ThreadPoolExecutor(max_workers=len(engines), thread_name_prefix="engine")
        self._slots = asyncio.Semaphore(len(engines))
        self._running: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._batch_seconds = 0.0  # EWMA of engine time per batch, bounds the static wait

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self, grace_s: float) -> None:
        """Stop forming batches, let running ones finish within grace_s, then fail what is left."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace_s)
        for task in set(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                items = await self._next_batch()
            except BaseException:
                self._slots.release()
                raise
            if not items:
                self._slots.release()
                if self.queue.closed:
                    return
                continue
            task = asyncio.get_running_loop().create_task(self._execute(items))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()

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

    async def _execute(self, items: list[QueuedItem]) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()  # the queue's clock (arrivals are loop.time()), for queue-wait histograms
        # Engine time by perf_counter: uvloop's loop.time() is libuv's millisecond clock, cached per loop
        # iteration, so a sub-millisecond batch would measure 0 s and bill its tenants nothing.
        began = time.perf_counter()
        engine_seconds = 0.0
        try:
            ids, mask = self.collate([item.payload for item in items])
            async with self.balancer.acquire() as engine:
                logits = await loop.run_in_executor(self._executor, engine.infer, ids, mask)
            engine_seconds = time.perf_counter() - began
            if logits.ndim != 2 or logits.shape[0] != len(items):
                raise EngineError(f"engine returned shape {logits.shape} for a batch of {len(items)} rows")
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
        except Exception as error:  # EngineError, or anything a third-party engine raises: the batch failed
            engine_seconds = time.perf_counter() - began
            self._fail(
                items,
                EngineUnavailable(
                    f"engine failed on a batch of {len(items)} rows: {error}", retry_after=self.retry_after_s
                ),
            )
        finally:
            if engine_seconds:
                self._batch_seconds = (
                    engine_seconds if not self._batch_seconds else 0.8 * self._batch_seconds + 0.2 * engine_seconds
                )
            if self._observer is not None:
                self._observer(items, start, engine_seconds)

    @staticmethod
    def _fail(items: list[QueuedItem], error: GatewayError) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(error)
