"""Dynamic, static and preferred-size batching on real (bounded) waits; engine errors fail the whole batch."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

import serving.batcher
from infopt.params import BatchingParams
from serving.batcher import Batcher, cut_size
from serving.codec import Codec
from serving.errors import EngineUnavailable
from serving.queue import QueuedItem, RequestQueue
from tests.serving.gateway_kit import SLA, FakeEngine


def _setup(batching: BatchingParams, engine: FakeEngine) -> tuple[RequestQueue, Batcher]:
    queue = RequestQueue(SLA, 256)
    return queue, Batcher(queue, [engine], batching, Codec(None, 16).collate)


def _submit(
    queue: RequestQueue, first_ids: list[int], timeout: float = 5.0, sla_class: str = "standard"
) -> list[QueuedItem]:
    loop = asyncio.get_running_loop()
    now = loop.time()
    items = [
        QueuedItem(
            (np.array([i, 7, 3]), np.ones(3, dtype=np.int64)), "t", sla_class, now, now + timeout, loop.create_future()
        )
        for i in first_ids
    ]
    for item in items:
        queue.put_many([item])
    return items


def test_cut_size_prefers_the_largest_preferred_size_available() -> None:
    batching = BatchingParams(max_batch_size=16, preferred_batch_sizes=[4, 8])
    assert [cut_size(n, batching) for n in (1, 3, 4, 7, 8, 15, 16, 40)] == [1, 3, 4, 4, 8, 8, 16, 16]
    assert cut_size(5, BatchingParams(max_batch_size=16)) == 5


async def test_dynamic_batches_fill_up_to_max_and_results_map_one_to_one() -> None:
    engine = FakeEngine(service_s=0.05)
    queue, batcher = _setup(BatchingParams(mode="dynamic", max_batch_size=4, max_wait_ms=50), engine)
    items = _submit(queue, list(range(10)))  # queued before the batcher starts: full batches at once
    batcher.start()
    rows = await asyncio.wait_for(asyncio.gather(*(i.future for i in items)), 5)
    await batcher.stop(1.0)
    assert engine.batches[:3] == [4, 4, 2]
    assert [int(row.argmax()) for row in rows] == [i % 3 for i in range(10)]  # the fake echoes ids[0] % 3


async def test_dynamic_partial_batch_flushes_at_max_wait() -> None:
    engine = FakeEngine()
    queue, batcher = _setup(BatchingParams(mode="dynamic", max_batch_size=8, max_wait_ms=100), engine)
    batcher.start()
    loop = asyncio.get_running_loop()
    start = loop.time()
    items = _submit(queue, [1, 2, 3])
    await asyncio.wait_for(asyncio.gather(*(i.future for i in items)), 5)
    waited = loop.time() - start
    await batcher.stop(1.0)
    assert engine.batches[0] == 3
    assert 0.09 <= waited < 1.0  # waited for the window, then flushed the partial batch


async def test_dynamic_cuts_at_preferred_sizes_when_the_window_closes() -> None:
    engine = FakeEngine(service_s=0.02)
    queue, batcher = _setup(
        BatchingParams(mode="dynamic", max_batch_size=16, max_wait_ms=1, preferred_batch_sizes=[4, 8]), engine
    )
    items = _submit(queue, list(range(13)))
    batcher.start()
    await asyncio.wait_for(asyncio.gather(*(i.future for i in items)), 5)
    await batcher.stop(1.0)
    assert engine.batches[:3] == [8, 4, 1]


async def test_static_waits_for_a_full_batch_and_flushes_before_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serving.batcher, "STATIC_MARGIN_S", 0.5)  # room for a late loop on a shared box
    engine = FakeEngine()
    queue, batcher = _setup(BatchingParams(mode="static", max_batch_size=4), engine)
    batcher.start()
    first = _submit(queue, [1, 2, 3])
    await asyncio.sleep(0.2)
    assert engine.batches == [] and not any(i.future.done() for i in first)  # no window: waits for the 4th row
    fourth = _submit(queue, [4])
    await asyncio.wait_for(asyncio.gather(*(i.future for i in first + fourth)), 5)
    assert engine.batches == [4]
    loop = asyncio.get_running_loop()
    start = loop.time()
    lone = _submit(queue, [5], timeout=2.0)
    await asyncio.wait_for(lone[0].future, 5)  # bounded by its deadline: answered, not expired
    waited = loop.time() - start
    await batcher.stop(1.0)
    # waited for more rows until the margin before its deadline, then flushed it alone, before the deadline
    assert engine.batches[-1] == 1 and 1.4 <= waited < 2.0


async def test_engine_error_fails_every_future_of_the_batch_then_next_batch_works() -> None:
    engine = FakeEngine()
    engine.failing.set()
    queue, batcher = _setup(BatchingParams(mode="dynamic", max_batch_size=4, max_wait_ms=1), engine)
    items = _submit(queue, [1, 2, 3])
    batcher.start()
    results = await asyncio.gather(*(i.future for i in items), return_exceptions=True)
    assert all(isinstance(r, EngineUnavailable) and "fake engine failure" in str(r) for r in results)
    engine.failing.clear()
    again = _submit(queue, [1])
    assert (await asyncio.wait_for(again[0].future, 5)).shape == (3,)
    await batcher.stop(1.0)


async def test_the_event_loop_stays_responsive_while_the_engine_runs() -> None:
    """The engine holds its batch until the test releases it: the loop must tick meanwhile. An engine call
    made on the loop would block it inside the call (no tick) until the engine gives up and fails the batch."""
    engine = FakeEngine()
    engine.permits = threading.Semaphore(0)
    queue, batcher = _setup(BatchingParams(mode="dynamic", max_batch_size=4, max_wait_ms=1), engine)
    batcher.start()
    items = _submit(queue, [1])
    ticks = 0
    try:
        while ticks < 10:
            await asyncio.sleep(0.01)
            ticks += bool(engine.batches)  # counted only while the engine holds the batch
        assert not items[0].future.done()  # ticked 10 times during the one engine call
    finally:
        engine.permits.release()
    assert (await asyncio.wait_for(items[0].future, 5)).shape == (3,)
    await batcher.stop(1.0)


async def test_stop_fails_queued_rows_explicitly() -> None:
    from serving.errors import ShuttingDown

    engine = FakeEngine(service_s=0.2)
    queue, batcher = _setup(BatchingParams(mode="dynamic", max_batch_size=1, max_wait_ms=1), engine)
    items = _submit(queue, [1, 2, 3])
    batcher.start()
    await asyncio.sleep(0.05)
    queue.close(ShuttingDown("bye"))
    await batcher.stop(1.0)
    outcomes = await asyncio.gather(*(i.future for i in items), return_exceptions=True)
    assert isinstance(outcomes[0], np.ndarray)  # the running batch finished within the grace
    assert all(isinstance(o, ShuttingDown) for o in outcomes[1:])
    with pytest.raises(ShuttingDown):
        _submit(queue, [9])


def test_sub_millisecond_batches_are_still_billed_under_uvloop() -> None:
    """uvloop's loop.time() has millisecond resolution; engine time must not round down to zero."""
    import uvloop

    observed: list[float] = []

    async def run() -> None:
        engine = FakeEngine(service_s=0.0002)
        queue = RequestQueue(SLA, 256)
        batcher = Batcher(
            queue,
            [engine],
            BatchingParams(mode="dynamic", max_batch_size=1, max_wait_ms=0),
            Codec(None, 16).collate,
            observer=lambda items, start, seconds: observed.append(seconds),
        )
        batcher.start()
        for index in range(20):
            await asyncio.wait_for(_submit(queue, [index])[0].future, 5)
        await batcher.stop(1.0)

    uvloop.run(run())
    assert len(observed) == 20
    assert all(seconds > 0 for seconds in observed), observed


@pytest.mark.parametrize(
    ("logits", "message"),
    [
        (np.array([[0.1, np.inf, 0.3]], dtype=np.float32), "1 non-finite logits"),
        (np.array([[np.nan, np.nan, 0.3]], dtype=np.float32), "2 non-finite logits"),
        (np.zeros((2, 3), dtype=np.float32), "shape (2, 3) for a batch of 1 rows; expected (1, 3)"),
        (np.zeros((1, 4), dtype=np.float32), "expected (1, 3)"),
        (np.zeros(3, dtype=np.float32), "shape (3,)"),
        (np.zeros((1, 3), dtype=np.int64), "int64 logits"),
        ([[0.1, 0.2, 0.3]], "list, not an array"),
    ],
)
def test_invalid_engine_output_is_an_engine_error_naming_what_is_wrong(logits: object, message: str) -> None:
    from infopt.engines.base import EngineError
    from serving.batcher import check_output

    with pytest.raises(EngineError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_output(logits, 1, 3)
    assert check_output(np.zeros((1, 3), dtype=np.float32), 1, 3).shape == (1, 3)
