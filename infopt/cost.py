"""The cost model: USD per 1000 requests of a device at an hourly rate, and per-tenant chargeback of a
shared deployment from the gateway's metrics or a load-test report.

Cost per 1k requests = hourly rate / 3600 / throughput x 1000 (`cost_per_1k`): the benchmark, the agent,
the challenge ladder and the LLM comparison all price throughput through it. The spec's formula splits the device cost evenly: tenant_cost = device_hours_used * hourly_rate /
tenants_sharing. Beside it, usage-based splits of the same total: by served requests, by the engine time
the gateway attributed to each tenant (infopt_tenant_device_seconds_total) and, for LLM deployments, by
tokens (infopt_tenant_tokens_total, prompt + completion), with each tenant's cost per 1k tokens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from infopt.params import CostParams


def cost_per_1k(hourly_usd: float, throughput_rps: float) -> float:
    """USD per 1000 requests for a device rented at `hourly_usd` serving `throughput_rps`."""
    return hourly_usd / 3600.0 / throughput_rps * 1000.0


class CostError(ValueError):
    """The usage source cannot be priced; the message names the file or value."""


@dataclass(frozen=True)
class Usage:
    requests: int  # served (ok) requests
    device_seconds: float = 0.0
    tokens: int = 0  # LLM tokens (prompt + completion) the gateway charged the tenant


class TenantCost(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: str
    cost_center: str | None
    requests: int
    request_share: float
    device_seconds: float
    equal_split: float  # the spec's formula
    request_split: float
    device_time_split: float | None  # None when no engine time was recorded
    tokens: int = 0
    token_split: float | None = None  # None when no LLM tokens were recorded
    cost_per_1k_tokens: float | None = None  # token_split / tokens * 1000 (the same for every tenant of a split
    # by tokens); equal_cost_per_1k_tokens prices the spec's equal split per tenant instead
    equal_cost_per_1k_tokens: float | None = None


class CostReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    currency: str
    device: str
    hourly_rate: float
    device_hours: float
    tenants_sharing: int
    total_cost: float
    tenants: list[TenantCost]


def chargeback(
    usage: Mapping[str, Usage],
    *,
    device_hours: float,
    device: str,
    cost: CostParams,
    tenants_sharing: int | None = None,
    cost_centers: Mapping[str, str] | None = None,
    source: str = "",
) -> CostReport:
    if device not in cost.hourly_usd:
        raise CostError(f"cost.hourly_usd has no rate for device {device!r} ({sorted(cost.hourly_usd)})")
    if device_hours < 0:
        raise CostError(f"device_hours is {device_hours}; must be >= 0")
    sharing = tenants_sharing if tenants_sharing is not None else len(usage)
    if sharing < 1:
        raise CostError("no tenant shares this deployment: nothing to charge")
    rate = cost.hourly_usd[device]
    total = device_hours * rate
    all_requests = sum(item.requests for item in usage.values())
    all_seconds = sum(item.device_seconds for item in usage.values())
    all_tokens = sum(item.tokens for item in usage.values())
    rows = []
    for name in sorted(usage):
        item = usage[name]
        share = item.requests / all_requests if all_requests else 0.0
        rows.append(
            TenantCost(
                tenant=name,
                cost_center=(cost_centers or {}).get(name),
                requests=item.requests,
                request_share=round(share, 6),
                device_seconds=round(item.device_seconds, 6),
                equal_split=round(total / sharing, 8),
                request_split=round(total * share, 8),
                device_time_split=round(total * item.device_seconds / all_seconds, 8) if all_seconds else None,
                tokens=item.tokens,
                token_split=round(total * item.tokens / all_tokens, 8) if all_tokens else None,
                cost_per_1k_tokens=round(total / all_tokens * 1000, 10) if item.tokens else None,
                equal_cost_per_1k_tokens=round(total / sharing / item.tokens * 1000, 10) if item.tokens else None,
            )
        )
    return CostReport(
        source=source,
        currency=cost.currency,
        device=device,
        hourly_rate=rate,
        device_hours=round(device_hours, 8),
        tenants_sharing=sharing,
        total_cost=round(total, 8),
        tenants=rows,
    )


def usage_from_loadgen(path: Path, replicas: int = 1) -> tuple[dict[str, Usage], float]:
    """Served requests per stream name (tenant) and the device hours of `replicas` over the run."""
    try:
        report = json.loads(path.read_text())
        streams = report["streams"]
        elapsed = float(report["elapsed_s"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise CostError(f"{path}: not a loadgen report ({error})") from None
    usage: dict[str, int] = {}
    for stream in streams:
        usage[stream["name"]] = usage.get(stream["name"], 0) + int(stream["ok"])
    return {name: Usage(requests=count) for name, count in usage.items()}, elapsed * replicas / 3600.0


def usage_from_metrics(text: str) -> dict[str, Usage]:
    """ok requests and attributed engine seconds per tenant from a /metrics exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    requests: dict[str, float] = {}
    seconds: dict[str, float] = {}
    tokens: dict[str, float] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as error:
        raise CostError(f"not a Prometheus text exposition: {error}") from None
    for family in families:
        for sample in family.samples:
            tenant = sample.labels.get("tenant")
            if tenant is None or tenant == "unknown":
                continue
            if sample.name == "infopt_requests_total" and sample.labels.get("status") == "ok":
                requests[tenant] = requests.get(tenant, 0.0) + sample.value
            elif sample.name == "infopt_tenant_device_seconds_total":
                seconds[tenant] = seconds.get(tenant, 0.0) + sample.value
            elif sample.name == "infopt_tenant_tokens_total":
                tokens[tenant] = tokens.get(tenant, 0.0) + sample.value
    return {
        name: Usage(
            requests=int(requests.get(name, 0)),
            device_seconds=seconds.get(name, 0.0),
            tokens=int(tokens.get(name, 0)),
        )
        for name in sorted(set(requests) | set(seconds) | set(tokens))
    }
