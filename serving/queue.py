"""One bounded priority queue per model: weighted class shares, per-class deadlines, no lost futures.

Classes are served by smooth weighted round robin over the non-empty classes (nginx's algorithm) with
sla_classes[].weight: with all classes backlogged, premium:standard:batch dequeues follow 8:3:1, so premium
goes first yet batch is never starved. A class that empties loses its accumulated credit. When the queue
is full, an arrival may evict the newest items of strictly lower classes (they get QueueFull); otherwise
it is refused with QueueFull. Every item's future ends resolved: result, exception or cancelled.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infopt.params import SlaClass
from serving.errors import DeadlineExceeded, GatewayError, QueueFull


@dataclass(eq=False)
class QueuedItem:
    """One row of a request waiting for a batch."""

    payload: Any
    tenant: str
    sla_class: str
    arrival: float
    deadline: float
    future: asyncio.Future = field(repr=False)
    queued: bool = False


class RequestQueue:
    def __init__(
        self,
        sla_classes: Mapping[str, SlaClass],
        capacity: int,
        *,
        retry_after_s: float = 1.0,
        on_change: Callable[[str, int], None] | None = None,
        on_drop: Callable[[QueuedItem, GatewayError], None] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity is {capacity}; must be >= 1")
        self.capacity = capacity
        self.retry_after_s = retry_after_s
        self._order = sorted(sla_classes, key=lambda name: sla_classes[name].priority)  # most urgent first
        self._rank = {name: index for index, name in enumerate(self._order)}
        self._weight = {name: sla_classes[name].weight for name in self._order}
        self._items: dict[str, deque[QueuedItem]] = {name: deque() for name in self._order}
        self._live = dict.fromkeys(self._order, 0)
        self._credit = dict.fromkeys(self._order, 0)
        self._size = 0
        self._changed = asyncio.Event()
        self._closed: GatewayError | None = None
        self._on_change = on_change
        self._on_drop = on_drop

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return self._size

    def size(self, sla_class: str) -> int:
        return self._live[sla_class]

    @property
    def classes(self) -> list[str]:
        return list(self._order)

    def _report(self, sla_class: str) -> None:
        if self._on_change is not None:
            self._on_change(sla_class, self._live[sla_class])

    def _unlink(self, item: QueuedItem) -> None:
        item.queued = False
        self._live[item.sla_class] -= 1
        self._size -= 1
        if self._live[item.sla_class] == 0:
            self._credit[item.sla_class] = 0

    def _drop(self, item: QueuedItem, error: GatewayError) -> None:
        self._unlink(item)
        if not item.future.done():
            item.future.set_exception(error)
        if self._on_drop is not None:
            self._on_drop(item, error)

    # ------------------------------------------------------------------ admission
    def put_many(self, items: Sequence[QueuedItem]) -> None:
        """Admit all rows of one request or none of them."""
        if self._closed is not None:
            raise copy.copy(self._closed)  # a fresh instance: the original is already set on dropped futures
        if not items:
            return
        sla_class = items[0].sla_class
        if sla_class not in self._rank:
            raise KeyError(f"sla_class {sla_class!r} is not one of {self._order}")
        need = len(items) - (self.capacity - self._size)
        if need > 0:
            self._evict_for(sla_class, need, len(items))
        for item in items:
            item.queued = True
            self._items[item.sla_class].append(item)
            self._live[item.sla_class] += 1
        self._size += len(items)
        self._report(sla_class)
        self._changed.set()

    def _evict_for(self, sla_class: str, need: int, asked: int) -> None:
        lower = [name for name in reversed(self._order) if self._rank[name] > self._rank[sla_class]]
        if sum(self._live[name] for name in lower) < need:
            raise QueueFull(
                f"queue is full ({self._size}/{self.capacity} rows queued; this request has {asked})",
                retry_after=self.retry_after_s,
            )
        for name in lower:
            items = self._items[name]
            while need and self._live[name]:
                victim = items.pop()
                if victim.queued:
                    self._drop(
                        victim,
                        QueueFull(
                            f"evicted from the full queue by a {sla_class} request", retry_after=self.retry_after_s
                        ),
                    )
                    need -= 1
            self._report(name)

    def abandon(self, item: QueuedItem) -> None:
        """The caller gave up (deadline, disconnect): remove the row if still queued and cancel it."""
        if item.queued:
            self._unlink(item)  # the deque entry is skipped lazily
            self._report(item.sla_class)
        if not item.future.done():
            item.future.cancel()

    # ------------------------------------------------------------------ service
    def _head(self, sla_class: str, now: float) -> QueuedItem | None:
        """First live, unexpired row of the class; expired rows met on the way get DeadlineExceeded."""
        items = self._items[sla_class]
        while items:
            item = items[0]
            if not item.queued:
                items.popleft()
            elif now >= item.deadline:
                items.popleft()
                self._drop(
                    item,
                    DeadlineExceeded(
                        f"{sla_class} request waited {(now - item.arrival) * 1000:.0f} ms in the queue, past its "
                        f"{(item.deadline - item.arrival) * 1000:.0f} ms deadline",
                        retry_after=self.retry_after_s,
                    ),
                )
            else:
                return item
        return None

    def take(self, count: int, now: float) -> list[QueuedItem]:
        """Up to `count` live rows by weighted class shares; expired rows are resolved, not returned."""
        batch: list[QueuedItem] = []
        touched: set[str] = set()
        while len(batch) < count:
            candidates = [name for name in self._order if self._head(name, now) is not None]
            if not candidates:
                break
            if len(candidates) == 1:
                # A lone backlogged class gains and pays back its own weight each pick (credit unchanged),
                # so take its rows in order without re-scanning every class per row.
                name = candidates[0]
                items = self._items[name]
                while len(batch) < count and self._head(name, now) is not None:
                    item = items.popleft()
                    self._unlink(item)
                    batch.append(item)
                touched.add(name)
                break
            total = 0
            for name in candidates:
                self._credit[name] += self._weight[name]
                total += self._weight[name]
            chosen = max(candidates, key=self._credit.__getitem__)  # first (most urgent) on ties
            self._credit[chosen] -= total
            item = self._items[chosen].popleft()
            self._unlink(item)
            touched.add(chosen)
            batch.append(item)
        for name in touched:
            self._report(name)
        return batch

    def oldest_arrival(self, now: float) -> float | None:
        heads = [item for name in self._order if (item := self._head(name, now)) is not None]
        return min((item.arrival for item in heads), default=None)

    def earliest_deadline(self, now: float) -> float | None:
        """Rows of one class share a timeout and arrive in order, so each class's head has its earliest deadline."""
        heads = [item for name in self._order if (item := self._head(name, now)) is not None]
        return min((item.deadline for item in heads), default=None)

    async def wait_for(self, count: int, until: float | None) -> None:
        """Return once `count` rows are queued, the loop clock passes `until`, or the queue is closed."""
        loop = asyncio.get_running_loop()
        while self._closed is None and self._size < count:
            timeout = None if until is None else until - loop.time()
            if timeout is not None and timeout <= 0:
                return
            self._changed.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                return

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def close(self, error: GatewayError) -> int:
        """Refuse new rows with `error` and resolve every queued one with it; returns how many."""
        self._closed = error
        dropped = 0
        for name in self._order:
            items = self._items[name]
            while items:
                item = items.popleft()
                if item.queued:
                    self._drop(item, error)
                    dropped += 1
            self._report(name)
        self._changed.set()
        return dropped
