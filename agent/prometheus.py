"""Read the gateway's metrics from a Prometheus server through its HTTP API (/api/v1/query, query_range, series).

The scaling node's traffic comes from the gateway's request counter, summed per SLA class:

    sum(rate(infopt_requests_total{model="<deployment>"}[1m])) by (sla_class)

(the gateway labels every series with `model` = the deployment name), and the queue it saw from
`sum(request_queue_length{model="<deployment>"}) by (sla_class)`, the HPA's own metric.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from agent.contract import Evidence
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
