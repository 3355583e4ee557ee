"""Slow-tenant isolation: does one tenant's large, legal traffic stall the others?

`infopt serve --variant <v>` runs in its own process on 127.0.0.1 with params.yaml's tenants. Two phases
of `--duration` seconds each: (1) the premium tenant alone, closed loop at `--concurrency`; (2) the same
premium load while the batch tenant sends one ~1 MB request a second (16 texts of 64,000 characters: under
serving.max_body_bytes and inside its row budget), the kind of request that used to block the event loop
for most of a second. A liveness poller measures /v2/health/live in both phases. Recorded: premium
p50/p95/p99 and outcomes per phase against its SLA p99, the batch requests' outcomes and latency and
whether their texts were reported truncated, the liveness probe's worst latency, the machine fingerprint
and load average.

    python -m benchmarks.isolation --out benchmarks/results/isolation.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from harness.child_server import free_port, stop, wait_ready
from harness.loadgen import Stream, run_load
from infopt.params import load_params

LARGE_TEXTS = 16
LARGE_CHARS = 64_000


def start_gateway(args: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    infopt = str(Path(sys.executable).parent / "infopt")
    command = [
        infopt, "serve", "--params", str(args.params), "--manifest", str(args.manifest), "--variant", args.variant,
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(command, env=dict(os.environ))


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    array = np.asarray(values) * 1000
    return {
        "p50": round(float(np.percentile(array, 50)), 2),
        "p95": round(float(np.percentile(array, 95)), 2),
        "p99": round(float(np.percentile(array, 99)), 2),
        "max": round(float(array.max()), 2),
    }


async def liveness(url: str, until: float) -> list[float]:
    seen = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            began = loop.time()
            response = await client.get("/v2/health/live")
            if response.status_code == 200:
                seen.append(loop.time() - began)
            await asyncio.sleep(0.05)
    return seen


async def large_requests(url: str, key: str, until: float) -> list[dict[str, Any]]:
    body = json.dumps({"texts": [("the kernel compiles the code " * 2300)[:LARGE_CHARS]] * LARGE_TEXTS}).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    outcomes = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            began = loop.time()
            response = await client.post("/v1/classify", content=body, headers=headers)
            elapsed = loop.time() - began
            truncated = None
            if response.status_code == 200:
                truncated = all(result["truncated"] for result in response.json()["results"])
            outcomes.append({"status": response.status_code, "seconds": elapsed, "truncated": truncated})
            await asyncio.sleep(max(0.0, 1.0 - elapsed))
    return outcomes


async def phase(url: str, model: str, premium: Stream, batch_key: str | None, duration: float) -> dict[str, Any]:
    until = asyncio.get_running_loop().time() + duration
    tasks = [run_load(url, [premium], model=model, timeout_s=30), liveness(url, until)]
    if batch_key is not None:
        tasks.append(large_requests(url, batch_key, until))
    results = await asyncio.gather(*tasks)
    report, live = results[0], results[1]
    stream = report.streams[0]
    out: dict[str, Any] = {
        "premium": {
            "sent": stream.sent,
            "ok": stream.ok,
            "status_429": stream.status_429,
            "status_503": stream.status_503,
            "expired": stream.expired,
            "errors": stream.errors,
            "throughput_rps": stream.throughput_rps,
            "latency_ms": stream.latency_ms.model_dump(),
        },
        "liveness_ms": percentiles(live),
    }
    if batch_key is not None:
        large = results[2]
        out["batch_large_requests"] = {
            "sent": len(large),
            "ok": sum(1 for item in large if item["status"] == 200),
            "statuses": sorted({item["status"] for item in large}),
            "all_reported_truncated": all(item["truncated"] for item in large if item["status"] == 200),
            "latency_ms": percentiles([item["seconds"] for item in large]),
            "body_bytes": len(json.dumps({"texts": ["x" * LARGE_CHARS] * LARGE_TEXTS})),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--manifest", type=Path, default=Path("artifacts/manifest.json"))
    parser.add_argument("--variant", default="int8-dynamic")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--concurrency", type=int, default=4, help="premium closed-loop clients")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/isolation.json"))
    args = parser.parse_args()
    params = load_params(args.params)
    by_class = {tenant.sla_class: tenant for tenant in params.tenants}
    if not {"premium", "batch"} <= set(by_class):
        raise SystemExit(f"{args.params}: the isolation benchmark needs a premium and a batch tenant")
    premium_tenant, batch_tenant = by_class["premium"], by_class["batch"]
    demo_key = "{}-demo-key".format  # params.yaml's demo keys (api_key_sha256 holds their hashes)
    premium = Stream(
        premium_tenant.name,
        demo_key(premium_tenant.name),
        mode="closed",
        concurrency=args.concurrency,
        duration_s=args.duration,
        sla_class="premium",
    )
    from infopt.fingerprint import collect

    load_start = [round(value, 2) for value in os.getloadavg()]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = start_gateway(args, port)
    try:
        wait_ready(gateway, f"{url}/v2/health/ready", timeout_s=120.0)
        alone = asyncio.run(phase(url, args.variant, premium, None, args.duration))
        shared = asyncio.run(phase(url, args.variant, premium, demo_key(batch_tenant.name), args.duration))
    finally:
        stop(gateway)
    sla_p99 = params.sla_classes["premium"].p99_ms
    fingerprint = collect().model_dump()
    fingerprint["load_average_start"] = load_start
    fingerprint["load_average_end"] = [round(value, 2) for value in os.getloadavg()]
    result = {
        "benchmark": "isolation",
        "variant": args.variant,
        "method": {
            "gateway": f"infopt serve --variant {args.variant} (own process, 127.0.0.1), params.yaml serving section",
            "premium": f"tenant {premium_tenant.name}, closed loop, {args.concurrency} clients, one short text",
            "batch": f"tenant {batch_tenant.name} (charge {batch_tenant.charge}), one request a second of "
            f"{LARGE_TEXTS} texts x {LARGE_CHARS} characters",
            "phases": ["premium alone", "premium + batch large requests"],
            "duration_s": args.duration,
            "limits": {
                key: getattr(params.serving, key)
                for key in ("max_body_bytes", "max_text_chars", "text_limit_action", "offload_body_bytes")
            },
        },
        "premium_sla_p99_ms": sla_p99,
        "alone": alone,
        "with_large_batch_requests": shared,
        "premium_p99_within_sla": {
            name: (data["premium"]["latency_ms"]["p99"] or float("inf")) <= sla_p99
            for name, data in (("alone", alone), ("with_large_batch_requests", shared))
        },
        "fingerprint": fingerprint,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("premium_sla_p99_ms", "premium_p99_within_sla")}, indent=2))
    for name in ("alone", "with_large_batch_requests"):
        print(name, json.dumps(result[name]))
    print(f"load average {load_start} -> {fingerprint['load_average_end']} ({time.strftime('%H:%M:%S')})")


if __name__ == "__main__":
    main()
