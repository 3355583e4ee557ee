"""A ladder step through the real gateway on 127.0.0.1, and the load client in front of it.

The host side is scaled the way `infopt serve --workers N` scales it: N HTTP worker processes on one port
(SO_REUSEPORT) in front of one admission process that owns the queue, the batcher and the one engine
replica, so a GPU's batches are filled from every worker's requests instead of being split over N replicas.
Each concurrency level is one closed-loop run (challenge/loadclient.py), in ascending order from a light
load that any host answers; once a level fails more than half of its requests the higher ones are not run
(recorded as `not_run`). The levels are coarse (fractions of the Little's-law concurrency of the model-level
rate), so up to `refine` more levels bisect, geometrically, the gap between the busiest level that meets the
SLA and the next one that does not. The level chosen for the step is the fastest one whose p99 meets the SLA
with at most 1% of requests failed (else the fastest that answered anything).

Each level also records the CPU each gateway process used in its window (challenge/hostcpu.py: the HTTP
workers, the admission process's event loop and its engine threads), so a level that stops scaling names
the process that ran out of core. With `texts_per_request` k > 1 the clients send k texts per request (the
Little's-law levels are then in requests, and the run's `texts_per_s` is what compares with the engine).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from challenge.engines import EngineSpec
from challenge.gateway_child import API_KEY, GatewaySpec
from challenge.hostcpu import WindowCpu
from challenge.loadclient import ClientResult, ClientSpec, run_clients
from harness.child_server import free_port
from infopt.params import BatchingParams, Params

MAX_FAILED_FRACTION = 0.01  # a level with more failed requests than this does not count as meeting the SLA
OVERLOADED_FRACTION = 0.5  # past a level that failed this share of its requests, higher levels are not run
# per gateway process, in single-text requests: the first level, one any host answers (latency at light load);
# clients sending k texts a request open k times fewer (at least one per process): 8 connections of 64 texts
# each per process already held more rows in flight than the SLA allows (the f05e436 ladder's batched run)
LIGHT_LOAD_CONNECTIONS = 8
SLA_CLASS = "premium"  # the load tenant's class: the targets are premium p99s


def mode_of(workers: int, engine_replicas: int = 1) -> str:
    engines = "the one engine replica" if engine_replicas == 1 else f"{engine_replicas} engine replicas"
    if workers < 2:
        return f"one gateway process: HTTP, admission, batcher and {engines} on one event loop"
    return (
        f"one gateway: {workers} HTTP worker processes (serving.workers) in front of one admission process "
        f"with the queue, the batcher and {engines} (serving.engine_replicas)"
    )


class GatewayError(RuntimeError):
    """A gateway process did not come up or died; the message names it and ends with its log."""


class GatewayLevel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connections: int
    client: ClientResult
    mean_batch_size: float | None  # rows per engine batch over the window, from the gateways' /metrics
    failed_fraction: float
    meets_sla: bool
    gateway_cpu: dict[str, float] = {}  # share of one core per gateway process / main-process thread, in the window


class GatewayRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    processes: int  # HTTP processes of the one gateway (serving.workers)
    engine_replicas: int = 1  # engines behind its one queue (serving.engine_replicas), each running its own batch
    replicas: int = 1  # independent gateways (each with its engine) on the one device, connections spread over them
    mode: str
    client_processes: int
    texts_per_request: int = 1
    engine: str
    batching: dict[str, object]
    sla_class: str
    p99_sla_ms: float | None
    startup_s: float
    levels: list[GatewayLevel]
    chosen: int | None  # index into levels
    throughput_rps: float | None  # requests per second
    texts_per_s: float | None = None  # texts (engine rows) per second: throughput_rps x texts_per_request
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    meets_sla: bool
    not_run: list[int] = []  # levels left out: a lower one was already overloaded (see OVERLOADED_FRACTION)
    error: str | None = None


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # 127.0.0.1 only
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def batch_counters(port: int) -> tuple[float, float]:
    """(batches, rows) so far from one gateway's infopt_batch_size histogram."""
    _, text = _get(f"http://127.0.0.1:{port}/metrics")
    count = total = 0.0
    for line in text.decode().splitlines():
        if line.startswith("infopt_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
        elif line.startswith("infopt_batch_size_sum"):
            total += float(line.rsplit(" ", 1)[1])
    return count, total


class Gateway:
    """Start the gateway child for one spec (with its workers, if any); stop it (SIGINT, then kill) on exit."""

    def __init__(self, spec: GatewaySpec, workdir: Path) -> None:
        self.spec, self.workdir = spec, workdir
        self.port = free_port()
        self.log = workdir / "gateway.log"
        self.child: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Gateway:
        self.workdir.mkdir(parents=True, exist_ok=True)
        spec_path = self.workdir / "gateway-spec.json"
        spec_path.write_text(self.spec.model_dump_json(indent=2))
        self.child = subprocess.Popen(
            [sys.executable, "-m", "challenge.gateway_child", "--spec", str(spec_path), "--port", str(self.port)],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        return self

    def wait_ready(self, timeout_s: float) -> None:
        assert self.child is not None
        deadline = time.monotonic() + timeout_s
        while True:
            if self.child.poll() is not None:
                raise GatewayError(
                    f"gateway on port {self.port} exited with {self.child.returncode}:\n{_tail(self.log)}"
                )
            try:
                status, body = _get(f"http://127.0.0.1:{self.port}/v2/health/ready", timeout=2.0)
            except OSError:
                status, body = 0, b""  # not listening yet
            if status == 200:
                return
            if b'"error"' in body:
                raise GatewayError(f"gateway on port {self.port} failed to load its engine: {body[:500]!r}")
            if time.monotonic() > deadline:
                raise GatewayError(f"gateway not ready within {timeout_s:.0f} s:\n{_tail(self.log)}")
            time.sleep(0.2)

    def counters(self) -> tuple[float, float]:
        return batch_counters(self.port)

    def __exit__(self, *exc: object) -> None:
        if self.child is None:
            return
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGINT)
        try:
            self.child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait(timeout=10)


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else ""


def refine_between(levels: list[GatewayLevel]) -> int | None:
    """The connection count halfway (geometrically) between the most loaded level that meets the SLA and the
    least loaded one above it that does not; None when there is no such gap or it is already closed."""
    meeting = [level.connections for level in levels if level.meets_sla]
    if not meeting:
        return None
    top = max(meeting)
    above = [level.connections for level in levels if not level.meets_sla and level.connections > top]
    if not above:
        return None
    between = round((top * min(above)) ** 0.5)
    tried = {level.connections for level in levels}
    return between if between not in tried and min(above) - top > max(2, top // 8) else None


def connection_levels(
    model_rps: float, p99_sla_ms: float, texts_per_request: int, processes: int, factors: tuple[float, ...]
) -> list[int]:
    """A light level, then `factors` x the Little's-law concurrency of the model-level rate at the SLA latency
    (in requests of `texts_per_request` texts), capped at 8192 connections. Both count requests, so both
    shrink with the texts each carries."""
    base = model_rps / texts_per_request * p99_sla_ms / 1000.0
    light = max(processes, round(LIGHT_LOAD_CONNECTIONS * processes / texts_per_request))
    return sorted({light} | {min(8192, max(light, round(factor * base))) for factor in factors})


def gateway_spec_for(
    engine: EngineSpec,
    batching: BatchingParams,
    params: Params,
    *,
    labels: list[str],
    tokenizer_dir: Path,
    levels: list[int],
    processes: int,
    engine_replicas: int | None = None,
) -> GatewaySpec:
    """The gateway child's spec for serving `engine` at `levels` connections with `processes` HTTP workers:
    the premium class's unthrottled load tenant, a queue and connection limits that refuse none of them.
    `engine_replicas` overrides params.serving.engine_replicas (engines behind the one queue)."""
    return GatewaySpec(
        engine=engine,
        labels=labels,
        max_seq_len=params.model.max_seq_len,
        tokenizer_dir=str(tokenizer_dir),
        sla_classes=dict(params.sla_classes),
        sla_class=SLA_CLASS,
        batching=batching,
        serving=params.serving.model_copy(
            update={
                "queue_capacity": max(4 * levels[-1], 1024),
                # every client connection of the highest level lands on one of the workers: none refused
                "max_connections": max(params.serving.max_connections, -(-levels[-1] // processes) + 64),
                "shutdown_grace_s": 2.0,  # the load has stopped when the gateways are stopped
                "engine_replicas": engine_replicas or params.serving.engine_replicas,
            }
        ),
        connections=levels[-1],
        workers=processes,
    )


def arm_all(cpus: list[WindowCpu], start: float, end: float) -> None:
    for cpu in cpus:
        cpu.arm(start, end)


def measure_gateway(
    spec: GatewaySpec,
    *,
    client_processes: int,
    connection_levels: list[int],
    texts: list[str],
    warmup_s: float,
    duration_s: float,
    ready_timeout_s: float,
    workdir: Path,
    p99_sla_ms: float | None,
    refine: int = 0,
    texts_per_request: int = 1,
    replicas: int = 1,
) -> GatewayRun:
    """Start the gateway, run each connection level (then up to `refine` levels between the busiest one that
    meets the SLA and the next one that does not), stop it; the chosen level as the module says.

    `replicas` > 1 starts that many independent gateways (each its own admission process and engine on the
    same device, as replicas of one deployment behind a Service) and spreads the connections over them."""
    began = time.monotonic()
    levels: list[GatewayLevel] = []
    not_run: list[int] = []
    with contextlib.ExitStack() as stack:
        gateways = [
            stack.enter_context(Gateway(spec, workdir if replicas == 1 else workdir / f"replica-{index}"))
            for index in range(replicas)
        ]
        for gateway in gateways:  # started together above; ready one after the other
            gateway.wait_ready(ready_timeout_s)
        startup = time.monotonic() - began

        def counters() -> tuple[float, float]:
            each = [gateway.counters() for gateway in gateways]
            return sum(batches for batches, _ in each), sum(rows for _, rows in each)

        def run_level(connections: int) -> GatewayLevel:
            before = counters()
            client_spec = ClientSpec(
                ports=[gateway.port for gateway in gateways],
                api_key=API_KEY,
                texts=texts,
                connections=connections,
                warmup_s=warmup_s,
                duration_s=duration_s,
                texts_per_request=texts_per_request,
            )
            cpus = [WindowCpu(gateway.child.pid) for gateway in gateways if gateway.child is not None]
            result = run_clients(
                client_spec,
                client_processes,
                workdir / f"level-{len(levels)}",
                timeout_s=120.0,
                on_window=partial(arm_all, cpus),
            )
            after = counters()
            batches, rows = after[0] - before[0], after[1] - before[1]
            total = result.ok + result.status_429 + result.status_503 + result.expired + result.errors
            failed = (total - result.ok) / total if total else 1.0  # nothing answered in the window: overloaded
            meets = (
                p99_sla_ms is not None
                and result.latency_p99_ms is not None
                and result.latency_p99_ms <= p99_sla_ms
                and failed <= MAX_FAILED_FRACTION
            )
            level = GatewayLevel(
                connections=connections,
                client=result,
                mean_batch_size=rows / batches if batches else None,
                failed_fraction=failed,
                meets_sla=meets,
                gateway_cpu={
                    (f"replica {index}: {role}" if replicas > 1 else role): share
                    for index, cpu in enumerate(cpus)
                    for role, share in cpu.wait().items()
                },
            )
            levels.append(level)
            return level

        for index, connections in enumerate(connection_levels):
            if run_level(connections).failed_fraction > OVERLOADED_FRACTION:
                not_run = connection_levels[index + 1 :]
                break
        for _ in range(refine):
            between = refine_between(levels)
            if between is None:
                break
            run_level(between)
    meeting = [i for i, level in enumerate(levels) if level.meets_sla]
    pool = meeting or [i for i, level in enumerate(levels) if level.client.ok]
    chosen = max(pool, key=lambda i: levels[i].client.throughput_rps) if pool else None
    best = levels[chosen].client if chosen is not None else None
    return GatewayRun(
        processes=spec.workers,
        engine_replicas=spec.serving.engine_replicas,
        replicas=replicas,
        mode=mode_of(spec.workers, spec.serving.engine_replicas)
        + (f"; {replicas} such gateways on the one device" if replicas > 1 else ""),
        client_processes=client_processes,
        texts_per_request=texts_per_request,
        engine=spec.engine.describe(),
        batching=spec.batching.model_dump(),
        sla_class=spec.sla_class,
        p99_sla_ms=p99_sla_ms,
        startup_s=round(startup, 2),
        levels=levels,
        chosen=chosen,
        throughput_rps=best.throughput_rps if best else None,
        texts_per_s=best.texts_per_s if best else None,
        latency_p50_ms=best.latency_p50_ms if best else None,
        latency_p95_ms=best.latency_p95_ms if best else None,
        latency_p99_ms=best.latency_p99_ms if best else None,
        meets_sla=bool(meeting),
        not_run=not_run,
    )
