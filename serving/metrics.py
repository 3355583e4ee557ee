"""Prometheus metrics of one gateway instance (its own CollectorRegistry: no process globals).

Names and labels are a contract: the HPA scales on `request_queue_length`, the agent and the cost report
read the `infopt_*` series. tests/serving/test_metrics_and_shutdown.py asserts them.

`infopt_gateway_cpu_seconds_total{model}` is the CPU of every process of the gateway: with
`serving.workers >= 2` the HTTP workers do the parsing, tokenization and response encoding, so the
`process_cpu_seconds_total` of the process that renders /metrics (the admission process) would miss most
of the front end's CPU. The agent's scaling node divides it by the request rate (agent/prometheus.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# The `status` label of infopt_requests_total (GatewayError.metric_status): only "ok" was answered 200.
REQUEST_STATUSES = (
    "ok",
    "rate_limited",
    "queue_full",
    "deadline_exceeded",
    "engine_error",
    "shutting_down",
    "overloaded",
    "bad_request",
    "unauthorized",
    "timeout",
    "client_disconnected",
    "internal_error",
)

GATEWAY_CPU = "infopt_gateway_cpu_seconds"  # exposed as infopt_gateway_cpu_seconds_total
GATEWAY_CPU_HELP = "User and system CPU seconds of every process of the gateway (HTTP workers included)"

ProcessKey = tuple[int, float]  # (pid, start time): a pid the kernel hands out again is another process


def process_cpu_seconds(pid: int) -> tuple[ProcessKey, float] | None:
    """User + system CPU seconds of process `pid` (all its threads), with its identity; None once it is gone."""
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            times = process.cpu_times()
            return (pid, process.create_time()), times.user + times.system
    except psutil.NoSuchProcess:  # exited (and reaped) since its pid was listed
        return None


@dataclass
class CpuTotal:
    """CPU seconds summed over a set of processes that changes (a worker restarted), never decreasing: a
    process that went away keeps the seconds it was last read with. A counter that dropped would read to
    Prometheus as a reset, and rate() would then count the surviving processes' whole CPU a second time."""

    gone_s: float = 0.0  # seconds of the processes no longer read, as of their last reading
    last: dict[ProcessKey, float] = field(default_factory=dict)

    def update(self, readings: Mapping[ProcessKey, float]) -> float:
        """The total after this reading of every live process (a process missing from it has ended)."""
        self.gone_s += sum(seconds for key, seconds in self.last.items() if key not in readings)
        self.last = dict(readings)
        return self.gone_s + sum(self.last.values())


class GatewayCpuCollector(Collector):
    """`infopt_gateway_cpu_seconds_total{model}`: this process plus the processes `follow` names, read at
    scrape time, labelled with the one model the gateway serves."""

    def __init__(
        self, model: str, read: Callable[[int], tuple[ProcessKey, float] | None] = process_cpu_seconds
    ) -> None:
        self._model = model
        self._read = read
        self._workers: Callable[[], Iterable[int]] = tuple
        self._total = CpuTotal()
        self._lock = threading.Lock()  # scrapes run on the loop, but a test or a drain may render from a thread

    def follow(self, workers: Callable[[], Iterable[int]]) -> None:
        """Also count, at each reading, the processes whose pids `workers()` returns (a multi-process
        gateway's live HTTP workers)."""
        self._workers = workers

    def observe(self) -> float:
        """Read every process now and return the total. A caller about to let a process go (its link closed)
        calls this first, so the seconds it used since the last scrape stay counted."""
        with self._lock:  # readings applied in the order they were taken
            pids = dict.fromkeys([os.getpid(), *self._workers()])
            readings = dict(reading for reading in map(self._read, pids) if reading is not None)
            return self._total.update(readings)

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(GATEWAY_CPU, GATEWAY_CPU_HELP, labels=["model"])

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(GATEWAY_CPU, GATEWAY_CPU_HELP, labels=["model"])
        family.add_metric([self._model], self.observe())
        yield family


class GatewayMetrics:
    """Every series the gateway exports, registered on a registry owned by this instance."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model: str) -> None:
        """`model`: the one model this gateway serves (the label of its CPU counter)."""
        self.registry = CollectorRegistry()
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        r = self.registry
        self.queue_length = Gauge(
            "request_queue_length", "Requests waiting in the model's queue", ["model", "sla_class"], registry=r
        )
        self.queue_wait = Histogram(
            "infopt_queue_wait_seconds",
            "Time from arrival to batch start",
            ["model", "sla_class"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_latency = Histogram(
            "infopt_request_latency_seconds",
            "Time from arrival to response",
            ["model", "sla_class"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "infopt_batch_size", "Rows per engine batch", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.requests = Counter(
            "infopt_requests", "Requests by outcome", ["model", "tenant", "sla_class", "status"], registry=r
        )
        self.rejections = Counter(
            "infopt_rejections", "Refused requests by reason", ["model", "tenant", "reason"], registry=r
        )
        self.tenant_device_seconds = Counter(
            "infopt_tenant_device_seconds",
            "Engine time attributed to the tenant (batch time split by rows)",
            ["tenant"],
            registry=r,
        )
        self.tenant_tokens = Counter(
            "infopt_tenant_tokens", "LLM tokens used by the tenant", ["tenant", "kind"], registry=r
        )
        self.model_ready = Gauge("infopt_model_ready", "1 when the model is loaded and serving", ["model"], registry=r)
        self.inflight = Gauge("infopt_inflight_requests", "Requests being handled", ["model"], registry=r)
        self.vllm_waiting = Gauge(
            "infopt_vllm_num_requests_waiting",
            "vLLM's vllm:num_requests_waiting, re-exported",
            ["model"],
            registry=r,
        )
        self.gateway_cpu = GatewayCpuCollector(model)
        r.register(self.gateway_cpu)
        ProcessCollector(registry=r)  # process_* of the process answering /metrics, the series users expect

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, cached: labels() validates, stringifies and takes the metric's lock on every
        call (a few us), which the request path would pay several times per request. Label values are bounded
        (models, classes, tenants, statuses), so the cache is as small as the registry's own series."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def outcome(
        self, model: str, tenant: str, sla_class: str, status: str, reason: str | None, latency_s: float | None
    ) -> None:
        """One request's end, counted once: its status, its refusal reason (a GatewayError code; None for ok
        and for a client that left) and, for an authenticated caller, its latency."""
        self.child(self.requests, model, tenant, sla_class, status).inc()
        if reason is not None:
            self.child(self.rejections, model, tenant, reason).inc()
        if latency_s is not None:
            self.child(self.request_latency, model, sla_class).observe(latency_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
