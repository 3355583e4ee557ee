"""Token bucket on the event-loop clock: request rates and LLM token budgets per tenant.

The caller passes `now` (asyncio's loop.time()), so the bucket never reads a wall clock and tests drive
time explicitly.
"""

from __future__ import annotations


class TokenBucket:
    """`capacity` tokens, refilled at `rate_per_s`; `charge` may go negative (debt paid by later refill)."""

    def __init__(self, rate_per_s: float, capacity: float, now: float) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"token bucket rate_per_s is {rate_per_s}; must be > 0")
        if capacity < 1:
            raise ValueError(f"token bucket capacity is {capacity}; must be >= 1")
        self.rate_per_s = rate_per_s
        self.capacity = float(capacity)
        self._tokens = float(capacity)
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate_per_s)
            self._updated = now

    def available(self, now: float) -> float:
        self._refill(now)
        return self._tokens

    def try_take(self, amount: float, now: float) -> float:
        """Take `amount` and return 0.0, or take nothing and return the seconds until it would fit."""
        if amount > self.capacity:
            raise ValueError(f"asked for {amount} tokens; the bucket holds at most {self.capacity:g}")
        self._refill(now)
        if self._tokens >= amount:
            self._tokens -= amount
            return 0.0
        return (amount - self._tokens) / self.rate_per_s

    def charge(self, amount: float, now: float) -> None:
        """Take `amount` unconditionally: usage known only afterwards (LLM completion tokens)."""
        self._refill(now)
        self._tokens -= amount
