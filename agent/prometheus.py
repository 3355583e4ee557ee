"""Read the gateway's metrics from a Prometheus server through its HTTP API (/api/v1/query, query_range, series).

The scaling node's traffic comes from the gateway's request counter, summed per SLA class:

    sum(rate(infopt_requests_total{model="<deployment>"}[1m])) by (sla_class)

(the gateway labels every series with `model` = the deployment name), and the queue it saw from
`sum(request_queue_length{model="<deployment>"}) by (sla_class)`, the HPA's own metric.

The front end's CPU per request (agent/frontend.py) is the gateway's CPU rate minus its engine's seconds, over
its request rate, in the same window. The CPU is `infopt_gateway_cpu_seconds_total{model}`, every process of a
gateway (with `serving.workers >= 2` its HTTP workers too, where most of that CPU is spent); the engine's
seconds carry no `model` label, so they are taken from the scrape targets (`instance`) that export the
deployment's `infopt_model_ready`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from agent.contract import Evidence
from agent.frontend import FrontEndCpu
from agent.traffic import TrafficTrace

UNAUTHENTICATED = "none"  # the gateway's sla_class label for requests it could not attribute to a tenant


class PrometheusError(RuntimeError):
    """The server is unreachable or answered an error; the message names the query."""


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]]  # (unix time, value)


def requests_rate_query(deployment: str | None, rate_window: str = "1m") -> str:
    selector = f'{{model="{deployment}"}}' if deployment else ""
    return f"sum(rate(infopt_requests_total{selector}[{rate_window}])) by (sla_class)"


def queue_length_query(deployment: str | None) -> str:
    selector = f'{{model="{deployment}"}}' if deployment else ""
    return f"sum(request_queue_length{selector}) by (sla_class)"


def _of_deployment(series: str, deployment: str | None) -> str:
    """`series` of the scrape targets that serve `deployment` (for series without a `model` label)."""
    selector = f'{{model="{deployment}"}}' if deployment else ""
    return f"{series} and on(instance) infopt_model_ready{selector}"


def gateway_cpu_query(deployment: str | None, rate_window: str = "1m") -> str:
    """CPU seconds per second of the deployment's gateways, every process of each (serving/metrics.py)."""
    selector = f'{{model="{deployment}"}}' if deployment else ""
    return f"sum(rate(infopt_gateway_cpu_seconds_total{selector}[{rate_window}]))"


def engine_seconds_query(deployment: str | None, rate_window: str = "1m") -> str:
    """Engine seconds per second in the deployment's gateways (batch time, attributed to tenants)."""
    return f"sum({_of_deployment(f'rate(infopt_tenant_device_seconds_total[{rate_window}])', deployment)})"


def total_requests_query(deployment: str | None, rate_window: str = "1m") -> str:
    """Every request the deployment's gateways handled, whatever its class or status: each cost front-end CPU."""
    selector = f'{{model="{deployment}"}}' if deployment else ""
    return f"sum(rate(infopt_requests_total{selector}[{rate_window}]))"


class PrometheusClient:
    def __init__(self, base_url: str, *, timeout_s: float = 15.0, client: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self._client.close()

    def _get(self, path: str, params: Mapping[str, Any], what: str) -> Any:
        try:
            response = self._client.get(f"{self.base_url}{path}", params=params)
        except httpx.HTTPError as error:
            raise PrometheusError(f"{self.base_url}{path} ({what}): {type(error).__name__}: {error}") from None
        try:
            body = response.json()
        except ValueError:
            raise PrometheusError(f"{self.base_url}{path} ({what}): HTTP {response.status_code}, not JSON") from None
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(
                f"{self.base_url}{path} ({what}): HTTP {response.status_code} "
                f"{body.get('errorType', '')}: {body.get('error', body)}"
            )
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[Series]:
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = at
        data = self._get("/api/v1/query", params, promql)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{promql}: expected an instant vector, got {data['resultType']}")
        return [
            Series(dict(item["metric"]), [(float(item["value"][0]), float(item["value"][1]))])
            for item in data["result"]
        ]

    def query_range(self, promql: str, start: float, end: float, step_s: float) -> list[Series]:
        data = self._get("/api/v1/query_range", {"query": promql, "start": start, "end": end, "step": step_s}, promql)
        return [
            Series(dict(item["metric"]), [(float(t), float(v)) for t, v in item["values"]]) for item in data["result"]
        ]

    def series(self, match: str, start: float | None = None, end: float | None = None) -> list[dict[str, str]]:
        params: dict[str, Any] = {"match[]": match}
        if start is not None:
            params["start"] = start
        if end is not None:
            params["end"] = end
        return list(self._get("/api/v1/series", params, match))


def traffic_from_prometheus(
    client: PrometheusClient,
    deployment: str | None,
    *,
    window_s: float = 3600.0,
    step_s: float = 60.0,
    rate_window: str = "1m",
    end: float | None = None,
) -> TrafficTrace:
    """Per-class request rates of the last `window_s` seconds at `step_s` resolution (steps with no sample: 0)."""
    end = time.time() if end is None else end
    start = end - window_s
    query = requests_rate_query(deployment, rate_window)
    series = client.query_range(query, start, end, step_s)
    count = math.floor(window_s / step_s) + 1
    rates: list[dict[str, float]] = [{} for _ in range(count)]
    for item in series:
        sla_class = item.labels.get("sla_class", "")
        if not sla_class or sla_class == UNAUTHENTICATED:
            continue
        for t, value in item.points:
            index = round((t - start) / step_s)
            if 0 <= index < count and math.isfinite(value):
                rates[index][sla_class] = value
    if not any(rates):
        raise PrometheusError(
            f"{client.base_url}: `{query}` returned no samples between {start:.0f} and {end:.0f}; "
            "is Prometheus scraping the gateway, and is the deployment name its `model` label?"
        )
    queue = queue_length_query(deployment)
    queue_series = client.query_range(queue, start, end, step_s)
    peak_queue = max((value for item in queue_series for _, value in item.points), default=0.0)
    window = f"[{start:.0f}, {end:.0f}] step {step_s:g} s"
    return TrafficTrace(
        step_s=step_s,
        rates=rates,
        source=f"{client.base_url} {window}",
        evidence=[
            Evidence(kind="prometheus_query", ref=query, detail=f"{client.base_url}, range {window}"),
            Evidence(
                kind="prometheus_query",
                ref=queue,
                detail=f"{client.base_url}, range {window}; peak queue {peak_queue:g} requests",
            ),
        ],
    )


def _by_time(series: list[Series]) -> dict[float, float]:
    """One summed series as {time: value}, non-finite points left out."""
    points: dict[float, float] = {}
    for item in series:
        for t, value in item.points:
            if math.isfinite(value):
                points[t] = points.get(t, 0.0) + value
    return points


def frontend_cpu_from_prometheus(
    client: PrometheusClient,
    deployment: str | None,
    *,
    window_s: float = 3600.0,
    step_s: float = 60.0,
    rate_window: str = "1m",
    end: float | None = None,
) -> FrontEndCpu | None:
    """The gateway's CPU seconds per request outside its engine over the window: (gateway CPU rate - engine
    seconds rate) / request rate, each summed over the steps where the gateway CPU and requests were both
    seen (a ratio of integrals: busy steps weigh more). The engine's seconds are its batches' wall time: with
    more than one intra-op thread the extra threads' CPU stays in the result (an upper bound, the safe side
    for capacity). None when the server has no gateway CPU or no requests for the deployment."""
    end = time.time() if end is None else end
    start = end - window_s
    queries = [
        gateway_cpu_query(deployment, rate_window),
        engine_seconds_query(deployment, rate_window),
        total_requests_query(deployment, rate_window),
    ]
    cpu, engine, requests = (_by_time(client.query_range(query, start, end, step_s)) for query in queries)
    steps = [t for t, rate in requests.items() if rate > 0 and t in cpu]
    if not steps:
        return None
    cpu_s, engine_s, request_count = (sum(series.get(t, 0.0) for t in steps) for series in (cpu, engine, requests))
    front_end_s = cpu_s - engine_s
    window = f"[{start:.0f}, {end:.0f}] step {step_s:g} s"
    if front_end_s < 0:
        raise PrometheusError(
            f"{client.base_url}: over {window} the engine's seconds ({engine_s * step_s:.1f} s, `{queries[1]}`) "
            f"exceed the gateway's CPU ({cpu_s * step_s:.1f} s, `{queries[0]}`): the engine does not run in the "
            "gateway's processes, so its CPU cannot be told apart from the front end's"
        )
    per_request = front_end_s / request_count
    summary = (
        f"{client.base_url}, range {window}, {len(steps)} steps: ({cpu_s / len(steps):.4g} CPU-s/s - "
        f"{engine_s / len(steps):.4g} engine-s/s) / {request_count / len(steps):.4g} req/s = "
        f"{per_request * 1000:.3f} ms CPU per request"
    )
    return FrontEndCpu(
        seconds_per_request=per_request,
        source=f"Prometheus {client.base_url}, {window}",
        how="the gateway's CPU rate (every process: HTTP workers too) minus its engine seconds, over its request rate",
        evidence=(
            Evidence(kind="prometheus_query", ref=queries[0], detail=summary),
            Evidence(kind="prometheus_query", ref=queries[1], detail=f"{client.base_url}, subtracted: engine time"),
            Evidence(kind="prometheus_query", ref=queries[2], detail=f"{client.base_url}, divided by: requests"),
        ),
    )


def adapter_metrics_query(rule: Mapping[str, Any], *, namespace: str, pods: Sequence[str]) -> str:
    """The PromQL prometheus-adapter runs for an HPA's Pods metric under `rule` (infra/metrics.py
    `adapter_rules`): its metricsQuery template with `<<.Series>>` the series the rule's seriesQuery names,
    `<<.LabelMatchers>>` the HPA's namespace and pods, `<<.GroupBy>>` the pod label."""
    series = str(rule["seriesQuery"]).split("{", 1)[0]
    matchers = f'namespace="{namespace}",pod=~"{"|".join(pods)}"'
    return (
        str(rule["metricsQuery"])
        .replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", matchers)
        .replace("<<.GroupBy>>", "pod")
    )
