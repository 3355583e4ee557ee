"""The engine "called directly": what a user without the gateway would deploy, for gateway_overhead.py.

A minimal Starlette app under the same uvicorn settings as the gateway: POST /v1/classify tokenizes the
texts with the variant's own tokenizer, queues the rows for a minimal dynamic batcher with the SAME
batching settings (dynamic window max_wait_ms, max_batch_size, preferred sizes; one batch at a time per
engine) and answers the same JSON as the gateway. No auth, rate limits, priorities, deadlines or metrics:
that difference is exactly what the benchmark measures. GET /stats returns the batch counters (two
integers) so the benchmark can report this side's mean batch size too.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infopt.engines.base import Engine
from infopt.params import BatchingParams
from serving.batcher import cut_size
from serving.codec import Codec, Row
from serving.settings import GatewaySettings


class MicroBatcher:
    """Rows wait until max_batch_size are queued or the oldest waited max_wait_ms; one batch runs at a time."""

    def __init__(self, engine: Engine, codec: Codec, batching: BatchingParams) -> None:
        if batching.mode != "dynamic":
            raise ValueError(f"the bare server implements dynamic batching only; got mode {batching.mode!r}")
        self.engine = engine
        self.codec = codec
        self.batching = batching
        self.batches = 0
        self.rows = 0
        self._pending: deque[tuple[float, Row, asyncio.Future[np.ndarray]]] = deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._task: asyncio.Task[None] | None = None

    async def submit(self, rows: list[Row]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        now = loop.time()
        futures = [loop.create_future() for _ in rows]
        self._pending.extend((now, row, future) for row, future in zip(rows, futures, strict=True))
        self._arrived.set()
        return np.stack(await asyncio.gather(*futures))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for _, _, future in self._pending:
            future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _wait(self, until: float | None) -> bool:
        self._arrived.clear()
        try:
            async with asyncio.timeout_at(until):
                await self._arrived.wait()
        except TimeoutError:
            return False
        return True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        limit, window = self.batching.max_batch_size, self.batching.max_wait_ms / 1000.0
        while True:
            while not self._pending:
                await self._wait(None)
            until = self._pending[0][0] + window
            while len(self._pending) < limit and loop.time() < until and await self._wait(until):
                pass
            batch = [self._pending.popleft() for _ in range(cut_size(len(self._pending), self.batching))]
            ids, mask = self.codec.collate([row for _, row, _ in batch])
            try:
                logits = await loop.run_in_executor(self._executor, self.engine.infer, ids, mask)
            except Exception as error:  # the engine failed on this batch: fail its rows, keep serving
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.batches += 1
            self.rows += len(batch)
            for (_, _, future), row in zip(batch, logits, strict=True):
                if not future.done():
                    future.set_result(row)


def create_bare_app(settings: GatewaySettings) -> Starlette:
    from serving.app import default_engine_factory

    (engine,) = default_engine_factory(settings)[:1]
    codec = Codec(settings.tokenizer_dir, settings.max_seq_len)
    labels = settings.labels
    state: dict[str, MicroBatcher] = {}

    async def classify(request: Request) -> Response:
        texts = json.loads(await request.body())["texts"]
        logits = await state["batcher"].submit(codec.encode(texts)[0])
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
        results = [
            {"label": labels[int(row.argmax())], "probabilities": dict(zip(labels, map(float, row), strict=True))}
            for row in probabilities
        ]
        return JSONResponse({"model": settings.model_name, "results": results})

    async def health(request: Request) -> Response:
        return JSONResponse({"ready": "batcher" in state})

    async def stats(request: Request) -> Response:
        batcher = state["batcher"]
        return JSONResponse({"batches": batcher.batches, "rows": batcher.rows})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        batcher = state["batcher"] = MicroBatcher(engine, codec, settings.batching)
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            engine.close()

    return Starlette(
        routes=[
            Route("/v1/classify", classify, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/stats", stats, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
