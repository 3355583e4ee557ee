"""A closed-loop HTTP/1.1 load client fast enough not to be what limits the gateway.

`run_clients` starts `processes` worker processes (`python -m challenge.loadclient --worker ...`); each
opens its share of keep-alive connections, spread round-robin over the gateway processes' ports, and keeps
exactly one request in flight per connection: POST /v1/classify with ONE text (real test texts in
rotation), pre-encoded once; with `texts_per_request` k > 1, k consecutive texts per request (a client
that batches its own texts: the host's per-request work is shared by k rows). Each worker runs one event loop (uvloop where installed) with plain
asyncio Protocols: no HTTP library on the per-request path, only a header scan for the status and
Content-Length.

Timeline (CLOCK_MONOTONIC is system-wide on Linux, so every worker shares it): each worker connects and
says `ready` on stdout; once all are ready the parent sends one `start_at` to every worker's stdin, so a
slow interpreter start never eats into the window. Every connection sends its first request at
`start_at`; responses that START after `start_at + warmup_s` and END before `start_at + warmup_s +
duration_s` are recorded; then every connection stops. Each response lands in exactly one bucket (ok,
429, 503, expired = 503 with code deadline_exceeded, errors = anything else or a broken connection).
Each worker also reports its CPU time over the window: a worker near one full core was the bottleneck,
and the result says so (`saturated_workers`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import resource
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

SATURATED_CPU = 0.9  # a worker that used this fraction of one core over the window limited the load


class ClientSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ports: list[int]
    api_key: str
    texts: list[str]
    connections: int  # in total, over all workers
    warmup_s: float
    duration_s: float
    path: str = "/v1/classify"
    texts_per_request: int = Field(1, ge=1)


class ClientResult(BaseModel):
    """The aggregate of all workers over the measured window."""

    model_config = ConfigDict(extra="forbid")

    connections: int
    processes: int
    duration_s: float
    ok: int
    status_429: int
    status_503: int
    expired: int
    errors: int
    throughput_rps: float  # ok responses per second of the window
    texts_per_request: int = 1
    texts_per_s: float = 0.0  # texts answered per second of the window: throughput_rps x texts_per_request
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    latency_mean_ms: float | None
    worker_cpu_fraction: list[float]  # CPU seconds / window seconds, per worker
    saturated_workers: int
    event_loop: str
    error_samples: list[str]


def request_bytes(path: str, api_key: str, text: str | list[str]) -> bytes:
    body = json.dumps({"texts": [text] if isinstance(text, str) else text}).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Tally:
    window_start: float
    window_end: float
    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    status_429: int = 0
    status_503: int = 0
    expired: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def record(self, started: float, finished: float, status: int, body: bytes) -> None:
        if started < self.window_start or finished > self.window_end:
            return
        if status == 200:
            self.ok += 1
            self.latencies.append((finished - started) * 1000.0)
        elif status == 429:
            self.status_429 += 1
        elif status == 503 and b"deadline_exceeded" in body:
            self.expired += 1
        elif status == 503:
            self.status_503 += 1
        else:
            self.error(f"HTTP {status}: {body[:160]!r}")

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text[:200])


class Connection(asyncio.Protocol):
    """One keep-alive connection with one request in flight until the window ends."""

    def __init__(self, requests: list[bytes], offset: int, tally: Tally, done: asyncio.Future[None]) -> None:
        self.requests, self.index, self.tally, self.done = requests, offset, tally, done
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.started = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self) -> None:
        if time.monotonic() >= self.tally.window_end:
            self.finish()
            return
        self.busy = True
        self.started = time.monotonic()
        self.transport.write(self.requests[self.index % len(self.requests)])  # type: ignore[union-attr]
        self.index += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].lower()
        position = head.find(b"content-length:")
        if position < 0:
            self.tally.error("response without content-length")
            self.finish()
            return
        line_end = head.find(b"\r\n", position)
        length = int(head[position + 15 : line_end if line_end >= 0 else len(head)])
        if len(self.buffer) < end + 4 + length:
            return
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        self.busy = False
        self.tally.record(self.started, time.monotonic(), int(head[9:12]), body)
        self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy:
            self.tally.error(f"connection lost: {exc}")
            self.busy = False
        if not self.done.done():
            self.done.set_result(None)

    def finish(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)


def raise_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _connect(
    spec: ClientSpec, index: int, processes: int, tally: Tally
) -> list[tuple[Connection, asyncio.Future[None]]]:
    loop = asyncio.get_running_loop()
    k = spec.texts_per_request
    requests = [
        request_bytes(spec.path, spec.api_key, [spec.texts[(start + i) % len(spec.texts)] for i in range(k)])
        for start in range(0, len(spec.texts), k)
    ]
    mine = [c for c in range(spec.connections) if c % processes == index]

    async def connect(number: int) -> tuple[Connection, asyncio.Future[None]]:
        done: asyncio.Future[None] = loop.create_future()
        protocol = Connection(requests, number * 7, tally, done)
        port = spec.ports[number % len(spec.ports)]  # round-robin over the gateway processes
        await loop.create_connection(lambda: protocol, "127.0.0.1", port)
        return protocol, done

    opened: list[tuple[Connection, asyncio.Future[None]]] = []
    for position in range(0, len(mine), 128):  # bounded bursts of connects: the listen backlog is finite
        opened.extend(await asyncio.gather(*(connect(number) for number in mine[position : position + 128])))
    return opened


async def _drive(opened: list[tuple[Connection, asyncio.Future[None]]], start_at: float, spec: ClientSpec) -> float:
    """Send from start_at until the window ends; returns this process's CPU seconds inside the window."""
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    for protocol, _ in opened:
        protocol.send()
    await asyncio.sleep(max(0.0, start_at + spec.warmup_s - time.monotonic()))
    cpu_before = time.process_time()
    await asyncio.sleep(max(0.0, start_at + spec.warmup_s + spec.duration_s - time.monotonic()))
    cpu = time.process_time() - cpu_before
    await asyncio.wait_for(asyncio.gather(*(done for _, done in opened)), timeout=30.0)
    return cpu


def worker_main(spec_path: Path, index: int, processes: int, out: Path) -> None:
    spec = ClientSpec.model_validate_json(spec_path.read_text())
    raise_file_limit(spec.connections // processes + 256)
    tally = Tally(window_start=float("inf"), window_end=float("inf"))
    use_uvloop = importlib.util.find_spec("uvloop") is not None
    if use_uvloop:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        opened = loop.run_until_complete(_connect(spec, index, processes, tally))
        print("ready", flush=True)
        start_at = float(sys.stdin.readline())
        tally.window_start = start_at + spec.warmup_s
        tally.window_end = tally.window_start + spec.duration_s
        cpu = loop.run_until_complete(_drive(opened, start_at, spec))
    finally:
        loop.close()
    np.save(out / f"latencies-{index}.npy", np.asarray(tally.latencies, dtype=np.float64))
    summary = {
        "ok": tally.ok,
        "status_429": tally.status_429,
        "status_503": tally.status_503,
        "expired": tally.expired,
        "errors": tally.errors,
        "error_samples": tally.error_samples,
        "cpu_fraction": cpu / spec.duration_s,
        "event_loop": "uvloop" if use_uvloop else "asyncio",
    }
    (out / f"worker-{index}.json").write_text(json.dumps(summary))


def _await_ready(children: list[subprocess.Popen[str]], workdir: Path, timeout_s: float) -> None:
    """Block until every worker printed `ready` (all its connections open); RuntimeError if one dies."""
    deadline = time.monotonic() + timeout_s
    waiting = {child.stdout.fileno(): (index, child) for index, child in enumerate(children)}  # type: ignore[union-attr]
    while waiting:
        ready, _, _ = select.select(list(waiting), [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise RuntimeError(
                f"load client worker(s) {sorted(i for i, _ in waiting.values())} not ready in {timeout_s:.0f} s"
            )
        for descriptor in ready:
            index, child = waiting.pop(descriptor)
            if child.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
                child.wait(timeout=10)
                tail = (workdir / f"worker-{index}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"load client worker {index} failed before it was ready: {tail}")


def run_clients(
    spec: ClientSpec,
    processes: int,
    workdir: Path,
    timeout_s: float,
    on_window: Callable[[float, float], None] | None = None,
) -> ClientResult:
    """Run the workers to completion and aggregate their windows (see the module docstring); `on_window` is
    told the measured window (monotonic start, end) as soon as it is fixed, before it begins."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / "client-spec.json"
    spec_path.write_text(spec.model_dump_json())
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "challenge.loadclient", "--spec", str(spec_path), "--worker", str(index),
             "--processes", str(processes), "--out", str(workdir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(workdir / f"worker-{index}.log").open("w"),
            text=True,
        )
        for index in range(processes)
    ]  # fmt: skip
    try:
        _await_ready(children, workdir, timeout_s)
        start_at = time.monotonic() + 0.2
        if on_window is not None:
            on_window(start_at + spec.warmup_s, start_at + spec.warmup_s + spec.duration_s)
        for child in children:
            child.stdin.write(f"{start_at}\n")  # type: ignore[union-attr]
            child.stdin.close()  # type: ignore[union-attr]
        for child in children:
            child.wait(timeout=spec.warmup_s + spec.duration_s + 60.0)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
    failed = [index for index, child in enumerate(children) if child.returncode != 0]
    if failed:
        tail = (workdir / f"worker-{failed[0]}.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"load client worker(s) {failed} failed: {tail}")
    summaries = [json.loads((workdir / f"worker-{index}.json").read_text()) for index in range(processes)]
    latencies = np.concatenate([np.load(workdir / f"latencies-{index}.npy") for index in range(processes)])
    ok = sum(item["ok"] for item in summaries)

    def pct(q: float) -> float | None:
        return float(np.percentile(latencies, q)) if len(latencies) else None

    cpu = [round(item["cpu_fraction"], 3) for item in summaries]
    return ClientResult(
        connections=spec.connections,
        processes=processes,
        duration_s=spec.duration_s,
        ok=ok,
        status_429=sum(item["status_429"] for item in summaries),
        status_503=sum(item["status_503"] for item in summaries),
        expired=sum(item["expired"] for item in summaries),
        errors=sum(item["errors"] for item in summaries),
        throughput_rps=ok / spec.duration_s,
        texts_per_request=spec.texts_per_request,
        texts_per_s=ok * spec.texts_per_request / spec.duration_s,
        latency_p50_ms=pct(50),
        latency_p95_ms=pct(95),
        latency_p99_ms=pct(99),
        latency_mean_ms=float(latencies.mean()) if len(latencies) else None,
        worker_cpu_fraction=cpu,
        saturated_workers=sum(value >= SATURATED_CPU for value in cpu),
        event_loop=summaries[0]["event_loop"],
        error_samples=[sample for item in summaries for sample in item["error_samples"]][:5],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="internal: one load client worker (see run_clients)")
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--processes", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    worker_main(args.spec, args.worker, args.processes, args.out)


if __name__ == "__main__":
    main()
