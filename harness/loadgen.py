"""Async HTTP load generator for the gateway: closed-loop (fixed concurrency) or open-loop (Poisson arrivals).

Each stream is one tenant's traffic, bounded by a request count and a duration. Every sent request ends in
exactly one bucket (ok, 429, 503, expired = 503 deadline_exceeded, errors = anything else), so
`sent == ok + status_429 + status_503 + expired + errors` is checkable. The JSON report carries the
machine fingerprint like every other measured number of the project.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict

from infopt.manifest import Fingerprint
from serving.timing import parse_gateway_ms

DEFAULT_TEXTS = (
    "the kernel compiles the code and the network sends packets",
    "atoms form molecules in the chemistry lab",
    "the manager schedules a meeting about the deadline",
)


@dataclass(frozen=True)
class Stream:
    name: str  # the tenant (or any label) the results are reported under
    api_key: str
    mode: Literal["closed", "open"] = "closed"
    concurrency: int = 8  # closed loop: requests in flight
    rate_per_s: float = 10.0  # open loop: mean Poisson arrival rate
    count: int | None = None  # at most this many requests
    duration_s: float = 10.0  # and for at most this long
    sla_class: str | None = None
    texts: tuple[str, ...] = DEFAULT_TEXTS
    # requests started in the stream's first warmup_s seconds are counted, but their latencies stay out of the
    # summaries: the client's connection pool and the server's caches are still growing then
    warmup_s: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("closed", "open"):
            raise ValueError(f"stream {self.name!r}: mode {self.mode!r} is not 'closed' or 'open'")
        if self.concurrency < 1 or self.rate_per_s <= 0 or self.duration_s <= 0:
            raise ValueError(f"stream {self.name!r}: concurrency, rate_per_s and duration_s must be positive")
        if not 0 <= self.warmup_s < self.duration_s:
            raise ValueError(f"stream {self.name!r}: warmup_s is {self.warmup_s}; must be >= 0 and < duration_s")
        if self.count is not None and self.count < 1:
            raise ValueError(f"stream {self.name!r}: count is {self.count}; must be >= 1")


class LatencySummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    max: float | None


class Counts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sent: int
    ok: int
    status_429: int
    status_503: int
    expired: int
    errors: int


class StreamReport(Counts):
    name: str
    sla_class: str | None
    mode: str
    concurrency: int
    rate_per_s: float
    count: int | None
    duration_s: float
    elapsed_s: float
    throughput_rps: float  # ok responses per second of the stream's run
    latency_ms: LatencySummary  # of ok responses (after the warm-up)
    warmup_s: float = 0.0
    latency_samples: int = 0  # the ok responses in latency_ms: those started after the warm-up
    # open loop: how late each request was sent against its Poisson schedule (the generator's own backlog: a
    # busy client loop bunches arrivals, and the load is then no longer the one it was asked to offer)
    send_lag_ms: LatencySummary | None = None
    # the gateway's own time on the same responses (its Server-Timing header); None when none carried it
    gateway_latency_ms: LatencySummary | None = None
    error_samples: list[str]


class LoadReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["loadgen"] = "loadgen"
    base_url: str
    model: str
    endpoint: Literal["classify", "v2"]
    elapsed_s: float
    streams: list[StreamReport]
    totals: Counts
    # every stream's ok responses together (after each stream's warm-up): the load's own percentiles
    latency_ms: LatencySummary | None = None
    gateway_latency_ms: LatencySummary | None = None
    fingerprint: Fingerprint


@dataclass
class _Tally:
    ok: int = 0
    status_429: int = 0
    status_503: int = 0
    expired: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    gateway_latencies: list[float] = field(default_factory=list)
    send_lags: list[float] = field(default_factory=list)  # open loop: how late each request left its schedule
    error_samples: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return self.ok + self.status_429 + self.status_503 + self.expired + self.errors

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text[:200])


def summarize(latencies_s: list[float]) -> LatencySummary:
    if not latencies_s:
        return LatencySummary(p50=None, p95=None, p99=None, mean=None, max=None)
    values = np.asarray(latencies_s) * 1000.0
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return LatencySummary(
        p50=round(float(p50), 3),
        p95=round(float(p95), 3),
        p99=round(float(p99), 3),
        mean=round(float(values.mean()), 3),
        max=round(float(values.max()), 3),
    )


def _request(stream: Stream, model: str, endpoint: str, index: int) -> tuple[str, dict]:
    text = stream.texts[index % len(stream.texts)]
    if endpoint == "classify":
        return "/v1/classify", {"texts": [text]}
    return f"/v2/models/{model}/infer", {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]
    }


async def _one(
    client: httpx.AsyncClient, stream: Stream, model: str, endpoint: str, index: int, tally: _Tally, timed_from: float
) -> None:
    loop = asyncio.get_running_loop()
    path, body = _request(stream, model, endpoint, index)
    start = loop.time()
    timed = start >= timed_from
    try:
        response = await client.post(path, json=body, headers={"Authorization": f"Bearer {stream.api_key}"})
    except httpx.HTTPError as error:
        tally.error(f"{type(error).__name__}: {error}")
        return
    if response.status_code == 200:
        tally.ok += 1
        if timed:
            tally.latencies.append(loop.time() - start)
            gateway_ms = parse_gateway_ms(response.headers.get("server-timing"))
            if gateway_ms is not None:
                tally.gateway_latencies.append(gateway_ms / 1000.0)
    elif response.status_code == 429:
        tally.status_429 += 1
    elif response.status_code == 503:
        code = (
            response.json().get("code")
            if response.headers.get("content-type", "").startswith("application/json")
            else None
        )
        if code == "deadline_exceeded":
            tally.expired += 1
        else:
            tally.status_503 += 1
    else:
        tally.error(f"HTTP {response.status_code}: {response.text}")


async def run_stream(
    client: httpx.AsyncClient,
    stream: Stream,
    *,
    model: str,
    endpoint: str,
    seed: int = 0,
    tally: _Tally | None = None,
) -> StreamReport:
    """One stream's traffic; `tally` (run_load's) collects its raw latencies for the pooled summaries."""
    loop = asyncio.get_running_loop()
    tally = tally if tally is not None else _Tally()
    start = loop.time()
    stop_at = start + stream.duration_s
    timed_from = start + stream.warmup_s
    limit = stream.count if stream.count is not None else 2**62
    issued = 0
    if stream.mode == "closed":

        async def worker() -> None:
            nonlocal issued
            while issued < limit and loop.time() < stop_at:
                index = issued
                issued += 1
                await _one(client, stream, model, endpoint, index, tally, timed_from)

        await asyncio.gather(*(worker() for _ in range(stream.concurrency)))
    else:
        rng = random.Random(seed)
        tasks: set[asyncio.Task[None]] = set()
        next_at = start
        while issued < limit and next_at < stop_at:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tally.send_lags.append(max(0.0, loop.time() - next_at))
            task = loop.create_task(_one(client, stream, model, endpoint, issued, tally, timed_from))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            issued += 1
            next_at += rng.expovariate(stream.rate_per_s)
        await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    return StreamReport(
        name=stream.name,
        sla_class=stream.sla_class,
        mode=stream.mode,
        concurrency=stream.concurrency,
        rate_per_s=stream.rate_per_s,
        count=stream.count,
        duration_s=stream.duration_s,
        elapsed_s=round(elapsed, 4),
        sent=tally.sent,
        ok=tally.ok,
        status_429=tally.status_429,
        status_503=tally.status_503,
        expired=tally.expired,
        errors=tally.errors,
        throughput_rps=round(tally.ok / elapsed, 3) if elapsed > 0 else 0.0,
        latency_ms=summarize(tally.latencies),
        warmup_s=stream.warmup_s,
        latency_samples=len(tally.latencies),
        send_lag_ms=summarize(tally.send_lags) if tally.send_lags else None,
        gateway_latency_ms=summarize(tally.gateway_latencies) if tally.gateway_latencies else None,
        error_samples=tally.error_samples,
    )


async def run_load(
    base_url: str,
    streams: list[Stream],
    *,
    model: str,
    endpoint: Literal["classify", "v2"] = "classify",
    timeout_s: float = 60.0,
    seed: int = 0,
    fingerprint: Fingerprint | None = None,
) -> LoadReport:
    """Run all streams at once against one gateway; returns the report (fingerprint collected if not given)."""
    from infopt.fingerprint import collect

    connections = sum(s.concurrency if s.mode == "closed" else max(16, int(s.rate_per_s)) for s in streams)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    loop = asyncio.get_running_loop()
    start = loop.time()
    tallies = [_Tally() for _ in streams]
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client:
        reports = await asyncio.gather(
            *(
                run_stream(client, stream, model=model, endpoint=endpoint, seed=seed + i, tally=tally)
                for i, (stream, tally) in enumerate(zip(streams, tallies, strict=True))
            )
        )
    totals = Counts(**{key: sum(getattr(r, key) for r in reports) for key in Counts.model_fields})
    latencies = [value for tally in tallies for value in tally.latencies]
    gateway_latencies = [value for tally in tallies for value in tally.gateway_latencies]
    return LoadReport(
        base_url=base_url,
        model=model,
        endpoint=endpoint,
        elapsed_s=round(loop.time() - start, 4),
        streams=list(reports),
        totals=totals,
        latency_ms=summarize(latencies) if latencies else None,
        gateway_latency_ms=summarize(gateway_latencies) if gateway_latencies else None,
        fingerprint=fingerprint or collect(),
    )


def write_report(report: LoadReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.model_dump(), indent=2) + "\n")


def parse_stream(spec: str) -> Stream:
    """`name=acme,key=acme-demo-key,mode=open,rate=50,count=200,duration=10,concurrency=4,class=premium,warmup=2`."""
    fields: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"stream spec {spec!r}: {part!r} is not key=value")
        fields[key.strip()] = value.strip()
    unknown = set(fields) - {"name", "key", "mode", "rate", "count", "duration", "concurrency", "class", "warmup"}
    if unknown or "key" not in fields:
        raise ValueError(f"stream spec {spec!r}: needs key=...; unknown fields {sorted(unknown)}")
    return Stream(
        name=fields.get("name", "stream"),
        api_key=fields["key"],
        mode=fields.get("mode", "closed"),  # type: ignore[arg-type]
        rate_per_s=float(fields.get("rate", 10)),
        count=int(fields["count"]) if "count" in fields else None,
        duration_s=float(fields.get("duration", 10)),
        concurrency=int(fields.get("concurrency", 8)),
        sla_class=fields.get("class"),
        warmup_s=float(fields.get("warmup", 0)),
    )
