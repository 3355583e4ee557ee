"""A measuring client for OpenAI-style completion servers (vLLM, the gateway, the comparison's servers).

Per request it records, on the client's clock (time.perf_counter):
- TTFT: request sent -> first streamed event carrying text;
- ITL: the gaps between consecutive text events (inter-token latency);
- TPOT: (end-to-end - TTFT) / (output tokens - 1), the mean time per output token after the first;
- end-to-end latency and the output tokens (the server's usage when it reports one, else the text events).

Load shapes: `closed_loop` keeps `concurrency` requests in flight (100 at once = the comparison's burst);
`open_loop` sends at Poisson arrivals of a given rate (the serving benchmark's sweep). Both are bounded by
the list of request bodies they are given. `summarize` turns results into percentiles, throughput and
goodput (requests per second that met the SLO on TTFT and TPOT).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np


@dataclass
class RequestResult:
    ok: bool
    status: int
    started: float  # perf_counter at send
    e2e_s: float
    ttft_s: float | None = None  # None when not streamed
    output_tokens: int = 0
    itl_s: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def tpot_s(self) -> float | None:
        if self.ttft_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


def _event_payload(line: str) -> dict[str, Any] | None:
    if not line.startswith("data:"):
        return None
    text = line[5:].strip()
    if not text or text == "[DONE]":
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def send(
    client: httpx.AsyncClient, url: str, body: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
) -> RequestResult:
    """One completion request (streamed when body['stream'] is true), measured."""
    started = time.perf_counter()
    try:
        if not body.get("stream"):
            response = await client.post(url, json=dict(body), headers=dict(headers or {}))
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                return RequestResult(False, response.status_code, started, elapsed, error=response.text[:200])
            usage = (response.json().get("usage") or {}) if response.content else {}
            return RequestResult(True, 200, started, elapsed, output_tokens=int(usage.get("completion_tokens") or 0))
        first: float | None = None
        last: float | None = None
        gaps: list[float] = []
        events = 0
        usage_tokens: int | None = None
        async with client.stream("POST", url, json=dict(body), headers=dict(headers or {})) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                return RequestResult(
                    False, response.status_code, started, time.perf_counter() - started, error=text[:200]
                )
            async for line in response.aiter_lines():
                data = _event_payload(line)
                if data is None:
                    continue
                if data.get("error"):
                    return RequestResult(
                        False, 200, started, time.perf_counter() - started, error=str(data["error"])[:200]
                    )
                if data.get("usage"):
                    usage_tokens = int(data["usage"].get("completion_tokens") or 0)
                choices = data.get("choices") or []
                if choices and (choices[0].get("text") or (choices[0].get("delta") or {}).get("content")):
                    now = time.perf_counter()
                    if first is None:
                        first = now
                    else:
                        gaps.append(now - (last or now))
                    last = now
                    events += 1
        elapsed = time.perf_counter() - started
        return RequestResult(
            True,
            200,
            started,
            elapsed,
            ttft_s=None if first is None else first - started,
            output_tokens=usage_tokens if usage_tokens is not None else events,
            itl_s=gaps,
        )
    except httpx.HTTPError as error:
        return RequestResult(False, 0, started, time.perf_counter() - started, error=f"{type(error).__name__}: {error}")


def client_for(concurrency: int, timeout_s: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
        limits=httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8),
    )


async def closed_loop(
    url: str,
    bodies: Sequence[Mapping[str, Any]],
    *,
    concurrency: int,
    timeout_s: float = 600.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[list[RequestResult], float]:
    """Send every body with at most `concurrency` in flight; returns results and the wall time."""
    queue: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    results: list[RequestResult] = []
    async with client_for(concurrency, timeout_s) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                results.append(await send(client, url, body, headers=headers))

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(bodies)))))
        return results, time.perf_counter() - began


async def open_loop(
    url: str,
    bodies: Sequence[Mapping[str, Any]],
    *,
    rate_per_s: float,
    seed: int = 0,
    timeout_s: float = 600.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[list[RequestResult], float]:
    """Send the bodies at Poisson arrivals of `rate_per_s` (exponential gaps, seeded); wait for all."""
    rng = random.Random(seed)
    async with client_for(len(bodies), timeout_s) as client:
        began = time.perf_counter()
        tasks = []
        next_at = began
        for body in bodies:
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(client, url, body, headers=headers)))
            next_at += rng.expovariate(rate_per_s)
        results = list(await asyncio.gather(*tasks))
        return results, time.perf_counter() - began


def _percentiles(values: Sequence[float], scale: float = 1000.0) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "mean": None}
    array = np.asarray(values) * scale
    return {
        "p50": round(float(np.percentile(array, 50)), 3),
        "p95": round(float(np.percentile(array, 95)), 3),
        "p99": round(float(np.percentile(array, 99)), 3),
        "mean": round(float(array.mean()), 3),
    }


@dataclass(frozen=True)
class Slo:
    """A request meets the SLO when its TTFT and its TPOT are both within these bounds (milliseconds)."""

    ttft_ms: float
    tpot_ms: float

    def met(self, result: RequestResult) -> bool:
        if not result.ok or result.ttft_s is None:
            return False
        tpot = result.tpot_s
        return result.ttft_s * 1000 <= self.ttft_ms and (tpot is None or tpot * 1000 <= self.tpot_ms)


def summarize(results: Sequence[RequestResult], wall_s: float, slo: Slo | None = None) -> dict[str, Any]:
    """Latency percentiles (ms), throughput and goodput of one run."""
    ok = [result for result in results if result.ok]
    tokens = sum(result.output_tokens for result in ok)
    summary: dict[str, Any] = {
        "requests": len(results),
        "ok": len(ok),
        "failed": len(results) - len(ok),
        "errors": sorted({result.error for result in results if result.error})[:3],
        "wall_s": round(wall_s, 3),
        "output_tokens": tokens,
        "output_tokens_per_s": round(tokens / wall_s, 3) if wall_s > 0 else None,
        "request_throughput_rps": round(len(ok) / wall_s, 3) if wall_s > 0 else None,
        "e2e_ms": _percentiles([result.e2e_s for result in ok]),
        "ttft_ms": _percentiles([result.ttft_s for result in ok if result.ttft_s is not None]),
        "tpot_ms": _percentiles([tpot for result in ok if (tpot := result.tpot_s) is not None]),
        "itl_ms": _percentiles([gap for result in ok for gap in result.itl_s]),
    }
    if slo is not None:
        good = sum(1 for result in results if slo.met(result))
        summary["slo"] = {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms}
        summary["goodput_rps"] = round(good / wall_s, 3) if wall_s > 0 else None
        summary["slo_attainment"] = round(good / len(results), 4) if results else None
    return summary
