"""Overload benchmark: the real gateway and engine, three tenants, one of them flooding.

`infopt serve --variant <v>` runs in its own process on 127.0.0.1 (all tenants of params.yaml); one
`infopt loadgen` process per tenant drives it (one client process would queue every tenant's requests behind
the flood in its own event loop): premium and standard tenants in closed loops, the batch tenant as an
open-loop Poisson flood far above its token bucket. It records what the issue asks for: per-class p99
against the SLA, rejections by reason (429 bucket / 503 queue or deadline), the zero-loss accounting
(sent = ok + 429 + 503 + expired, no transport errors), and the per-tenant cost of the run from the gateway's
own /metrics (device-seconds attributed per tenant). Bounded: `--duration` seconds of load, then it stops.

    python -m benchmarks.overload --out benchmarks/results/overload.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from harness.child_server import free_port, stop, wait_ready
from harness.loadgen import Counts, LoadReport, Stream
from infopt.cost import chargeback, usage_from_metrics
from infopt.params import load_params


def start_gateway(args: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    infopt = str(Path(sys.executable).parent / "infopt")
    command = [
        infopt,
        "serve",
        "--params",
        str(args.params),
        "--manifest",
        str(args.manifest),
        "--variant",
        args.variant,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    return subprocess.Popen(command, env=dict(os.environ))


def stream_spec(stream: Stream) -> str:
    spec = f"name={stream.name},key={stream.api_key},mode={stream.mode},duration={stream.duration_s},class={stream.sla_class}"
    return spec + (f",rate={stream.rate_per_s}" if stream.mode == "open" else f",concurrency={stream.concurrency}")


def run_clients(url: str, model: str, streams: list[Stream], folder: Path) -> LoadReport:
    """One `infopt loadgen` process per stream, all at once; their reports merged into one."""
    infopt = str(Path(sys.executable).parent / "infopt")
    outs = [folder / f"{stream.name}.json" for stream in streams]
    clients = [
        subprocess.Popen(
            [
                infopt,
                "loadgen",
                "--url",
                url,
                "--model",
                model,
                "--stream",
                stream_spec(stream),
                "--seed",
                str(index),
                "--out",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
        )
        for index, (stream, out) in enumerate(zip(streams, outs, strict=True))
    ]
    for client in clients:
        if client.wait(timeout=max(s.duration_s for s in streams) + 120) != 0:
            raise SystemExit(f"loadgen exited with {client.returncode}")
    reports = [LoadReport.model_validate_json(out.read_text()) for out in outs]
    merged = [stream for report in reports for stream in report.streams]
    totals = Counts(**{key: sum(getattr(stream, key) for stream in merged) for key in Counts.model_fields})
    return LoadReport(
        base_url=url,
        model=model,
        endpoint="classify",
        elapsed_s=max(r.elapsed_s for r in reports),
        streams=merged,
        totals=totals,
        fingerprint=reports[0].fingerprint,
    )


def rejections(metrics_text: str) -> dict[str, float]:
    """infopt_rejections_total summed per reason (the gateway's own count of what it turned away)."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "infopt_rejections_total":
                reason = sample.labels.get("reason", "?")
                totals[reason] = totals.get(reason, 0.0) + sample.value
    return totals


def sla_check(report: LoadReport, sla_p99_ms: dict[str, float | None]) -> dict[str, Any]:
    rows = {}
    for stream in report.streams:
        limit = sla_p99_ms.get(stream.sla_class or "")
        p99 = stream.latency_ms.p99
        rows[stream.name] = {
            "sla_class": stream.sla_class,
            "p99_ms": p99,
            "sla_p99_ms": limit,
            "within_sla": None if limit is None or p99 is None else p99 <= limit,
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--manifest", type=Path, default=Path("artifacts/manifest.json"))
    parser.add_argument("--variant", default="int8-dynamic")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per stream")
    parser.add_argument("--flood-rps", type=float, default=300.0, help="open-loop rate of the batch tenant")
    parser.add_argument("--concurrency", type=int, default=4, help="closed-loop clients per interactive tenant")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/overload.json"))
    args = parser.parse_args()

    params = load_params(args.params)
    by_class = {tenant.sla_class: tenant for tenant in params.tenants}
    missing = {"premium", "standard", "batch"} - set(by_class)
    if missing:
        raise SystemExit(
            f"{args.params}: the overload benchmark needs a tenant in each class; none for {sorted(missing)}"
        )
    demo_key = "{}-demo-key".format  # params.yaml's demo keys (tenants.api_key_sha256 holds their hashes)
    streams = [
        Stream(
            name=by_class["premium"].name,
            api_key=demo_key(by_class["premium"].name),
            mode="closed",
            concurrency=args.concurrency,
            duration_s=args.duration,
            sla_class="premium",
        ),
        Stream(
            name=by_class["standard"].name,
            api_key=demo_key(by_class["standard"].name),
            mode="closed",
            concurrency=args.concurrency,
            duration_s=args.duration,
            sla_class="standard",
        ),
        Stream(
            name=by_class["batch"].name,
            api_key=demo_key(by_class["batch"].name),
            mode="open",
            rate_per_s=args.flood_rps,
            duration_s=args.duration,
            sla_class="batch",
        ),
    ]
    load_start = [round(value, 2) for value in os.getloadavg()]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = start_gateway(args, port)
    try:
        wait_ready(gateway, f"{url}/v2/health/ready", timeout_s=120.0)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="infopt-overload-") as folder:
            report = run_clients(url, args.variant, streams, Path(folder))
        wall_s = time.monotonic() - started
        metrics_text = httpx.get(f"{url}/metrics", timeout=5).text
    finally:
        stop(gateway)

    tenants = {tenant.name: tenant for tenant in params.tenants}
    usage = usage_from_metrics(metrics_text)
    cost = chargeback(
        usage,
        device_hours=wall_s / 3600.0,
        device="cpu",
        cost=params.cost,
        cost_centers={name: tenant.cost_center for name, tenant in tenants.items()},
        source="gateway /metrics",
    )
    lost = report.totals.sent - (
        report.totals.ok + report.totals.status_429 + report.totals.status_503 + report.totals.expired
    )
    result = {
        "benchmark": "overload",
        "variant": args.variant,
        "method": {
            "gateway": f"infopt serve --variant {args.variant} (own process, 127.0.0.1), serving/batching from params",
            "client": "one `infopt loadgen` process per tenant (httpx), started together",
            "streams": [
                {
                    "name": s.name,
                    "class": s.sla_class,
                    "mode": s.mode,
                    "concurrency": s.concurrency,
                    "rate_per_s": s.rate_per_s if s.mode == "open" else None,
                    "duration_s": s.duration_s,
                }
                for s in streams
            ],
            "token_buckets": {name: {"rate_per_s": t.rate_per_s, "burst": t.burst} for name, t in tenants.items()},
        },
        "accounting": {
            **report.totals.model_dump(),
            "lost": lost,
            "zero_lost": lost == 0 and report.totals.errors == 0,
        },
        "sla": sla_check(report, {name: sla.p99_ms for name, sla in params.sla_classes.items()}),
        "gateway_rejections_by_reason": rejections(metrics_text),
        "cost": cost.model_dump(),
        "load": report.model_dump(),
        "fingerprint": {
            **report.fingerprint.model_dump(),
            "load_average_start": load_start,
            "load_average_end": [round(value, 2) for value in os.getloadavg()],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, row in result["sla"].items():
        stream = next(s for s in report.streams if s.name == name)
        print(
            f"{name:8} {row['sla_class']:8} sent {stream.sent:6} ok {stream.ok:6} 429 {stream.status_429:6} "
            f"503 {stream.status_503:5} expired {stream.expired:4} p99 {row['p99_ms']} ms (SLA {row['sla_p99_ms']})"
        )
    print(f"accounting: {result['accounting']} -> {args.out}")


if __name__ == "__main__":
    main()
