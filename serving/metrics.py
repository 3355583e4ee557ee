"""Prometheus metrics of one gateway instance (its own CollectorRegistry: no process globals).

Names and labels are a contract: the HPA scales on `request_queue_length`, the agent and the cost report
read the `infopt_*` series. tests/serving/test_metrics.py asserts them.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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


class GatewayMetrics:
    """Every series the gateway exports, registered on a registry owned by this instance."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
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

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, cached: labels() validates, stringifies and takes the metric's lock on every
        call (a few us), which the request path would pay several times per request. Label values are bounded
        (models, classes, tenants, statuses), so the cache is as small as the registry's own series."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)
