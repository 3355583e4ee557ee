"""The per-model priority queue: class order, weighted shares, capacity/eviction, deadlines, close."""

from __future__ import annotations

import asyncio

import pytest

from serving.errors import DeadlineExceeded, QueueFull, ShuttingDown
from serving.queue import QueuedItem, RequestQueue
from tests.serving.gateway_kit import SLA


def _item(sla_class: str, now: float = 0.0, timeout: float = 10.0, tag: object = None) -> QueuedItem:
    return QueuedItem(tag, "t", sla_class, now, now + timeout, asyncio.get_running_loop().create_future())


async def test_one_of_each_class_is_served_premium_then_standard_then_batch() -> None:
    queue = RequestQueue(SLA, 10)
    for name in ("batch", "standard", "premium"):
        queue.put_many([_item(name)])
    assert [item.sla_class for item in queue.take(3, now=0.0)] == ["premium", "standard", "batch"]


async def test_backlogged_classes_share_dequeues_8_3_1_so_batch_is_not_starved() -> None:
    queue = RequestQueue(SLA, 200)
    for name in ("premium", "standard", "batch"):
        queue.put_many([_item(name) for _ in range(50)])
    taken = [item.sla_class for item in queue.take(24, now=0.0)]
    assert {name: taken.count(name) for name in SLA} == {"premium": 16, "standard": 6, "batch": 2}
    assert len(queue) == 150 - 24 and queue.size("batch") == 48


async def test_full_queue_refuses_same_class_but_evicts_newest_lower_class_rows() -> None:
    queue = RequestQueue(SLA, 3, retry_after_s=2.0)
    old, new = _item("batch", tag="old"), _item("batch", tag="new")
    queue.put_many([old, _item("standard"), new])
    with pytest.raises(QueueFull) as refused:
        queue.put_many([_item("batch")])
    assert refused.value.retry_after == 2.0
    queue.put_many([_item("premium")])  # evicts the newest batch row
    assert isinstance(new.future.exception(), QueueFull) and not old.future.done()
    std = queue._items["standard"][0]
    queue.put_many([_item("premium"), _item("premium")])  # evicts the remaining lower rows: old batch and standard
    assert isinstance(old.future.exception(), QueueFull) and isinstance(std.future.exception(), QueueFull)
    with pytest.raises(QueueFull):
        queue.put_many([_item("premium")])  # nothing lower left to evict: refused
    assert len(queue) == 3 and queue.size("premium") == 3


async def test_expired_rows_are_resolved_with_deadline_exceeded_not_served() -> None:
    queue = RequestQueue(SLA, 10)
    stale, fresh = _item("premium", now=0.0, timeout=0.25), _item("premium", now=0.2, timeout=0.25)
    queue.put_many([stale])
    queue.put_many([fresh])
    assert queue.take(5, now=0.3) == [fresh]
    assert isinstance(stale.future.exception(), DeadlineExceeded)
    assert len(queue) == 0


async def test_abandoned_rows_leave_the_queue_and_close_resolves_every_queued_future() -> None:
    queue = RequestQueue(SLA, 10)
    items = [_item(name) for name in ("premium", "standard", "batch", "batch")]
    for item in items:
        queue.put_many([item])
    queue.abandon(items[1])
    assert items[1].future.cancelled() and len(queue) == 3 and queue.size("standard") == 0
    assert queue.close(ShuttingDown("bye")) == 3
    assert all(item.future.done() for item in items)
    assert all(isinstance(item.future.exception(), ShuttingDown) for item in items if not item.future.cancelled())
    with pytest.raises(ShuttingDown):
        queue.put_many([_item("premium")])


async def test_wait_for_returns_when_enough_rows_arrive_or_the_time_passes() -> None:
    queue = RequestQueue(SLA, 10)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await queue.wait_for(2, start + 0.05)
    assert 0.04 <= loop.time() - start < 0.5
    loop.call_later(0.02, lambda: queue.put_many([_item("batch"), _item("batch")]))
    start = loop.time()
    await queue.wait_for(2, start + 5.0)
    assert loop.time() - start < 1.0 and len(queue) == 2


async def test_queue_length_observer_sees_each_class() -> None:
    seen: dict[str, int] = {}
    queue = RequestQueue(SLA, 10, on_change=seen.__setitem__)
    queue.put_many([_item("premium"), _item("premium")])
    assert seen == {"premium": 2}
    queue.take(1, now=0.0)
    assert seen["premium"] == 1


async def test_a_lone_class_is_taken_in_order_skipping_abandoned_and_expired_rows_then_shares_resume() -> None:
    queue = RequestQueue(SLA, 200)
    rows = [_item("standard", tag=index, timeout=5.0 if index == 3 else 10.0) for index in range(8)]
    queue.put_many(rows)
    queue.abandon(rows[1])
    taken = queue.take(4, now=6.0)  # row 3 expired at 5.0
    assert [item.payload for item in taken] == [0, 2, 4, 5]
    assert isinstance(rows[3].future.exception(), DeadlineExceeded) and rows[1].future.cancelled()
    assert len(queue) == 2 and queue.size("standard") == 2
    for name in ("premium", "batch"):
        queue.put_many([_item(name) for _ in range(50)])
    queue.put_many([_item("standard") for _ in range(48)])
    taken_classes = [item.sla_class for item in queue.take(24, now=6.0)]
    assert {name: taken_classes.count(name) for name in SLA} == {"premium": 16, "standard": 6, "batch": 2}
