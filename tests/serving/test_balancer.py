"""Balancer policies: rotation, least-outstanding, health skipping, outstanding bookkeeping."""

from __future__ import annotations

import asyncio

import pytest

from serving.balancer import Balancer
from serving.errors import EngineUnavailable


async def test_round_robin_cycles_over_items_in_order() -> None:
    balancer = Balancer(["a", "b", "c"], policy="round_robin")
    picked = []
    for _ in range(6):
        async with balancer.acquire() as item:
            picked.append(item)
    assert picked == ["a", "b", "c", "a", "b", "c"]


async def test_round_robin_skips_unhealthy_and_resumes_when_healthy_again() -> None:
    balancer = Balancer(["a", "b", "c"], policy="round_robin")
    balancer.mark_unhealthy("b")
    picked = [balancer.pick() for _ in range(4)]
    assert picked == ["a", "c", "a", "c"]
    balancer.mark_healthy("b")
    assert {balancer.pick() for _ in range(3)} == {"a", "b", "c"}


async def test_least_outstanding_prefers_the_idle_item() -> None:
    balancer = Balancer(["a", "b"], policy="least_outstanding")
    release = asyncio.Event()
    held: list[str] = []

    async def hold() -> None:
        async with balancer.acquire() as item:
            held.append(item)
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(3)]
    await asyncio.sleep(0.01)
    # 3 concurrent holders over 2 items: loads 2 and 1, never 3 and 0
    assert sorted(balancer.outstanding(item) for item in "ab") == [1, 2]
    less_loaded = min("ab", key=balancer.outstanding)
    assert balancer.pick() == less_loaded
    release.set()
    await asyncio.gather(*holders)
    assert balancer.total_outstanding == 0
    assert balancer.served("a") + balancer.served("b") == 3


async def test_outstanding_is_released_when_the_block_raises() -> None:
    balancer = Balancer(["a"], policy="least_outstanding")
    with pytest.raises(RuntimeError):
        async with balancer.acquire():
            raise RuntimeError("backend failed")
    assert balancer.outstanding("a") == 0


async def test_no_healthy_item_raises_engine_unavailable_with_retry_after() -> None:
    balancer = Balancer(["a", "b"], policy="round_robin", retry_after_s=2.0)
    balancer.mark_unhealthy("a")
    balancer.mark_unhealthy("b")
    assert balancer.healthy_count == 0
    with pytest.raises(EngineUnavailable) as caught:
        async with balancer.acquire():
            pass
    assert caught.value.retry_after == 2.0


def test_bad_policy_and_empty_items_are_rejected_with_the_value() -> None:
    with pytest.raises(ValueError, match="'random'"):
        Balancer(["a"], policy="random")
    with pytest.raises(ValueError, match="empty"):
        Balancer([])
    with pytest.raises(KeyError):
        Balancer(["a"]).mark_unhealthy("zzz")


async def test_capacity_skips_busy_items_and_refuses_when_all_are_busy() -> None:
    balancer = Balancer(["a", "b"], policy="round_robin", capacity=1)
    async with balancer.acquire() as first:
        async with balancer.acquire() as second:
            assert {first, second} == {"a", "b"}
            with pytest.raises(EngineUnavailable, match="capacity 1"):
                balancer.pick()
        assert balancer.pick() == second
