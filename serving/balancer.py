"""Spread work over interchangeable backends (in-process engine replicas, vLLM endpoints).

Generic over the item type so the same policy code picks an ONNX session or a base URL. All bookkeeping
happens on the event loop thread (acquire/release are not called from worker threads), so no lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from serving.errors import EngineUnavailable

T = TypeVar("T")
Policy = Literal["round_robin", "least_outstanding"]
POLICIES: tuple[str, ...] = ("round_robin", "least_outstanding")


@dataclass
class _Slot(Generic[T]):
    item: T
    outstanding: int = 0
    healthy: bool = True
    served: int = 0


class Balancer(Generic[T]):
    """Pick a healthy item by policy; `async with balancer.acquire() as item:` counts it as outstanding.

    round_robin cycles over healthy items; least_outstanding takes the healthy item with the fewest
    in-flight uses, ties broken in rotation so equal loads still spread. `capacity` caps the outstanding uses
    of one item (1 for an in-process engine that runs one batch at a time); items at the cap are skipped.
    """

    def __init__(
        self,
        items: Sequence[T],
        *,
        policy: str = "least_outstanding",
        retry_after_s: float = 1.0,
        capacity: int | None = None,
    ) -> None:
        if not items:
            raise ValueError("Balancer needs at least one item; got an empty sequence")
        if policy not in POLICIES:
            raise ValueError(f"load-balancing policy {policy!r} is not one of {list(POLICIES)}")
        if capacity is not None and capacity < 1:
            raise ValueError(f"Balancer capacity is {capacity}; must be >= 1 or None")
        self.policy = policy
        self.capacity = capacity
        self.retry_after_s = retry_after_s
        self._slots: list[_Slot[T]] = [_Slot(item) for item in items]
        self._next = 0

    # ------------------------------------------------------------------ state
    @property
    def items(self) -> list[T]:
        return [slot.item for slot in self._slots]

    def _slot(self, item: T) -> _Slot[T]:
        for slot in self._slots:
            if slot.item is item:
                return slot
        for slot in self._slots:
            if slot.item == item:
                return slot
        raise KeyError(f"{item!r} is not an item of this balancer")

    def mark_healthy(self, item: T, healthy: bool = True) -> None:
        self._slot(item).healthy = healthy

    def mark_unhealthy(self, item: T) -> None:
        self._slot(item).healthy = False

    def is_healthy(self, item: T) -> bool:
        return self._slot(item).healthy

    def outstanding(self, item: T) -> int:
        return self._slot(item).outstanding

    def served(self, item: T) -> int:
        return self._slot(item).served

    @property
    def healthy_count(self) -> int:
        return sum(1 for slot in self._slots if slot.healthy)

    @property
    def total_outstanding(self) -> int:
        return sum(slot.outstanding for slot in self._slots)

    # ------------------------------------------------------------------ picking
    def _choose(self) -> _Slot[T]:
        count = len(self._slots)
        order = [self._slots[(self._next + offset) % count] for offset in range(count)]
        healthy = [slot for slot in order if slot.healthy]
        if not healthy:
            raise EngineUnavailable(f"no healthy backend among {count} ({self.policy})", retry_after=self.retry_after_s)
        if self.capacity is not None:
            healthy = [slot for slot in healthy if slot.outstanding < self.capacity]
            if not healthy:
                raise EngineUnavailable(
                    f"all {count} backends are at capacity {self.capacity}", retry_after=self.retry_after_s
                )
        if self.policy == "round_robin":
            chosen = healthy[0]
        else:
            chosen = min(healthy, key=lambda slot: slot.outstanding)  # min keeps the first in rotation on ties
        self._next = (self._slots.index(chosen) + 1) % count
        return chosen

    def pick(self) -> T:
        """The item the policy would use next, without counting it as outstanding."""
        return self._choose().item

    def reserve(self) -> T:
        """Count the policy's next item as outstanding until `release`; EngineUnavailable when none fits."""
        slot = self._choose()
        slot.outstanding += 1
        slot.served += 1
        return slot.item

    def reserve_item(self, item: T) -> None:
        """Count `item` as outstanding whatever its health (a health probe of an unhealthy replica)."""
        self._slot(item).outstanding += 1

    def release(self, item: T) -> None:
        self._slot(item).outstanding -= 1

    def has_free(self) -> bool:
        """A healthy item below its capacity exists."""
        return any(slot.healthy and (self.capacity is None or slot.outstanding < self.capacity) for slot in self._slots)

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[T]:
        """Reserve an item for the duration of the block; raises EngineUnavailable when none is healthy."""
        item = self.reserve()
        try:
            yield item
        finally:
            self.release(item)
