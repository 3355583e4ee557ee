"""Gateway overhead: the full gateway vs the bare engine server, both over HTTP, same client, one run.

(a) gateway: `serving.app.create_app` (auth, token bucket, priority queue, dynamic batcher, metrics)
    served by `serving.server.run_server`, the same server as `infopt serve` (uvloop, httptools with
    the gateway's pre-auth limits, no access log), one unthrottled benchmark tenant;
(b) bare:    benchmarks/bare_engine_server.py: a minimal Starlette app that tokenizes and calls the same
    engine (same variant, engine_threads) with the same dynamic batching settings and nothing else,
    under the same uvicorn setup: the engine "called directly" as a user without the gateway deploys it.

Each server runs in its own child process on 127.0.0.1 (not pinned: both share the box's cores with the
client, as a deployment would). Both are started and warmed up, then the client (wrk, one thread, keep-
alive, POST /v1/classify with one text, four texts in rotation) runs closed-loop at each concurrency
level for a fixed duration, alternating gateway/bare for `--rounds` rounds so a shared machine's load
drift hits both sides alike; each side's figure is the median over its rounds. Per run: throughput,
p50/p95/p99 (wrk's latency histogram), the client's CPU (rusage of the wrk child), the server process's
CPU (/proc/<pid>/stat, all its threads), mean batch size (the gateway: infopt_batch_size from its own
/metrics; bare: its /stats counters), and the load average. The goal (<= 1 ms added p50, >= 0.9x
throughput, at --goal-concurrency) is computed from the numbers and recorded whatever the outcome.

    python -m benchmarks.gateway_overhead --variant int8-dynamic [--model-dir artifacts/variants/int8-dynamic/onnx]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from harness import child_server
from harness.child_server import free_port
from infopt.params import Tenant, load_params
from serving.settings import GatewaySettings

RESULTS = Path("benchmarks/results/gateway_overhead.json")
API_KEY = "benchmark-key"
TEXTS = (
    "the kernel compiles the code and the network sends packets",
    "politicians debate the budget in parliament",
    "atoms form molecules in the chemistry lab",
    "the manager schedules a meeting about the deadline",
)
SIDES = ("gateway", "bare")
WRK_SCRIPT = """
local bodies = {BODIES}
local requests = {}
local index = 0
init = function(args)
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format("POST", "/v1/classify",
      {["Content-Type"] = "application/json", ["Authorization"] = "Bearer API_KEY"}, body)
  end
end
request = function()
  index = index % #requests + 1
  return requests[index]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non_2xx_3xx": %d, "socket_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p95_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean, latency.max))
end
"""


def build_settings(params_path: Path, manifest_path: Path, variant: str, model_dir: Path | None) -> GatewaySettings:
    """The params' serving section and SLA classes, one unthrottled benchmark tenant in the batch class."""
    from infopt.manifest import load_manifest
    from serving.settings import settings_from_params

    params = load_params(params_path)
    if manifest_path.is_file():
        settings = settings_from_params(
            params, load_manifest(manifest_path), variant=variant, engine="onnxruntime", model_dir=model_dir
        )
    else:
        if model_dir is None:
            raise SystemExit(
                f"{manifest_path} not found: pass --model-dir (an ONNX artifact folder with its tokenizer)"
            )
        config = json.loads((model_dir / "config.json").read_text())
        labels = tuple(config["id2label"][str(i)] for i in range(len(config["id2label"])))
        settings = GatewaySettings(
            model_name=variant,
            variant=variant,
            engine="onnxruntime",
            labels=labels,
            max_seq_len=params.model.max_seq_len,
            sla_classes=dict(params.sla_classes),
            tenants=(),
            batching=params.serving.batching,
            serving=params.serving,
            model_dir=model_dir,
            tokenizer_dir=model_dir,
        )
    tenant = Tenant(
        name="bench",
        sla_class="batch",
        rate_per_s=1e9,
        burst=1_000_000_000,
        cost_center="bench",
        api_key_sha256=[hashlib.sha256(API_KEY.encode()).hexdigest()],
    )
    # One intra-op thread: on a small shared box, ONNX Runtime's spinning pool threads fight the HTTP
    # processes for cores; both sides of the comparison use the same engine settings.
    return replace(
        settings,
        tenants=(tenant,),
        serving=settings.serving.model_copy(update={"queue_capacity": max(settings.serving.queue_capacity, 1024)}),
        log_level="warning",
        engine_threads=1,
    )


def serve(args: argparse.Namespace) -> None:
    """The child process: one of the two servers on 127.0.0.1:args.port. The gateway runs under its own
    server (serving.server.run_server: limits, drain, as `infopt serve`); the bare app under plain uvicorn
    with the same loop, parser and logging (uvloop, httptools, no access log)."""
    settings = build_settings(args.params, args.manifest, args.variant, args.model_dir)
    if args.serve == "gateway":
        from serving.app import create_app
        from serving.server import run_server

        run_server(create_app(settings), host="127.0.0.1", port=args.port, log_level="warning")
        return
    import uvicorn

    from benchmarks.bare_engine_server import create_bare_app

    uvicorn.run(
        create_bare_app(settings),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


# ---------------------------------------------------------------------- measurement helpers
@dataclass
class Server:
    side: str
    url: str
    process: subprocess.Popen

    def cpu_seconds(self) -> float:
        """utime + stime of the server process, all threads (fields 14, 15 of /proc/<pid>/stat)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def batch_counters(self) -> tuple[float, float]:
        """(batches, rows) so far: the gateway's own infopt_batch_size histogram, or the bare server's /stats."""
        if self.side == "bare":
            stats = httpx.get(f"{self.url}/stats", timeout=10).json()
            return float(stats["batches"]), float(stats["rows"])
        count = total = 0.0
        for family in text_string_to_metric_families(httpx.get(f"{self.url}/metrics", timeout=10).text):
            if family.name == "infopt_batch_size":
                for sample in family.samples:
                    if sample.name == "infopt_batch_size_count":
                        count += sample.value
                    elif sample.name == "infopt_batch_size_sum":
                        total += sample.value
        return count, total


def start_server(side: str, args: argparse.Namespace) -> Server:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "benchmarks.gateway_overhead",
        "--serve",
        side,
        "--port",
        str(port),
        "--params",
        str(args.params),
        "--manifest",
        str(args.manifest),
        "--variant",
        args.variant,
    ]
    if args.model_dir is not None:
        command += ["--model-dir", str(args.model_dir)]
    return Server(side, f"http://127.0.0.1:{port}", subprocess.Popen(command, env=dict(os.environ)))


def wait_ready(server: Server, timeout_s: float = 120.0) -> None:
    path = "/v2/health/ready" if server.side == "gateway" else "/health"
    try:
        child_server.wait_ready(
            server.process,
            server.url + path,
            timeout_s=timeout_s,
            is_ready=lambda response: response.status_code == 200 and bool(response.json().get("ready")),
        )
    except child_server.ChildServerError as error:
        raise SystemExit(f"{server.side} server: {error}") from None


def stop_server(server: Server) -> None:
    child_server.stop(server.process)


def run_wrk(wrk: str, script: Path, server: Server, connections: int, duration_s: float) -> dict[str, Any]:
    """One closed-loop wrk run; wrk's summary plus client CPU, server CPU, mean batch size and load."""
    batches_before, rows_before = server.batch_counters()
    server_cpu_before = server.cpu_seconds()
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall_before = time.monotonic()
    completed = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--timeout", "10s", "-s", str(script), server.url],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - wall_before
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = server.cpu_seconds() - server_cpu_before
    batches_after, rows_after = server.batch_counters()
    summary_lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not summary_lines:
        raise SystemExit(f"wrk failed ({completed.returncode}): {completed.stdout}\n{completed.stderr}")
    summary = json.loads(summary_lines[-1])
    duration = summary["duration_us"] / 1e6
    failures = summary["non_2xx_3xx"] + summary["socket_errors"] + summary["timeouts"]
    client_cpu = (client_after.ru_utime - client_before.ru_utime) + (client_after.ru_stime - client_before.ru_stime)
    batches = batches_after - batches_before
    return {
        "requests": summary["requests"],
        "failures": failures,
        "duration_s": round(duration, 3),
        "throughput_rps": round((summary["requests"] - failures) / duration, 1),
        "latency_p50_ms": summary["p50_us"] / 1000,
        "latency_p95_ms": summary["p95_us"] / 1000,
        "latency_p99_ms": summary["p99_us"] / 1000,
        "latency_mean_ms": round(summary["mean_us"] / 1000, 3),
        "mean_batch_size": round((rows_after - rows_before) / batches, 2) if batches else None,
        "client_cpu_cores": round(client_cpu / wall, 3),
        "server_cpu_cores": round(server_cpu / wall, 3),
        "server_cpu_ms_per_request": round(1000 * server_cpu / summary["requests"], 3) if summary["requests"] else None,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


MEDIAN_KEYS = (
    "throughput_rps",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_mean_ms",
    "mean_batch_size",
    "client_cpu_cores",
    "server_cpu_cores",
    "server_cpu_ms_per_request",
)


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {
        "failures": sum(run["failures"] for run in runs),
        "requests": sum(run["requests"] for run in runs),
    }
    for key in MEDIAN_KEYS:
        values = [run[key] for run in runs if run[key] is not None]
        merged[key] = round(statistics.median(values), 3) if values else None
    merged["rounds"] = runs
    return merged


def compare(gateway: dict[str, Any], bare: dict[str, Any]) -> dict[str, float]:
    return {
        "added_p50_ms": round(gateway["latency_p50_ms"] - bare["latency_p50_ms"], 3),
        "throughput_ratio": round(gateway["throughput_rps"] / bare["throughput_rps"], 4),
        "added_server_cpu_ms_per_request": round(
            gateway["server_cpu_ms_per_request"] - bare["server_cpu_ms_per_request"], 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--manifest", type=Path, default=Path("artifacts/manifest.json"))
    parser.add_argument("--variant", default="int8-dynamic")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 100])
    parser.add_argument("--goal-concurrency", type=int, default=100)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run at the goal concurrency")
    parser.add_argument("--low-duration", type=float, default=3.0, help="seconds per run at the other levels")
    parser.add_argument("--rounds", type=int, default=3, help="alternating gateway/bare runs per level")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load per server before measuring")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--serve", choices=SIDES, help="internal: run only this server (the child process)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    if args.goal_concurrency not in args.concurrency:
        raise SystemExit(f"--goal-concurrency {args.goal_concurrency} is not one of --concurrency {args.concurrency}")
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: apt-get install -y wrk (the benchmark's load client)")
    from infopt.fingerprint import collect
    from serving.tenancy import Tenancy

    load_start = [round(value, 2) for value in os.getloadavg()]
    started = time.monotonic()
    settings = build_settings(args.params, args.manifest, args.variant, args.model_dir)
    Tenancy(settings.tenants, settings.sla_classes)  # fail here, not in the child, on a bad tenant
    bodies = ", ".join(json.dumps(json.dumps({"texts": [text]})) for text in TEXTS)
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "classify.lua"
        script.write_text(WRK_SCRIPT.replace("{BODIES}", "{" + bodies + "}").replace("API_KEY", API_KEY))
        servers = [start_server(side, args) for side in SIDES]
        try:
            for server in servers:
                wait_ready(server)
            for server in servers:
                run_wrk(wrk, script, server, args.goal_concurrency, args.warmup)
            runs: dict[int, dict[str, list[dict[str, Any]]]] = {}
            for connections in args.concurrency:
                duration = args.duration if connections == args.goal_concurrency else args.low_duration
                runs[connections] = {side: [] for side in SIDES}
                for _ in range(args.rounds):
                    for server in servers:
                        runs[connections][server.side].append(run_wrk(wrk, script, server, connections, duration))
        finally:
            for server in servers:
                stop_server(server)
    levels: dict[str, dict[str, Any]] = {}
    for connections, by_side in runs.items():
        gateway, bare = median_of(by_side["gateway"]), median_of(by_side["bare"])
        levels[str(connections)] = {"gateway": gateway, "bare": bare, **compare(gateway, bare)}
    goal_level = levels[str(args.goal_concurrency)]
    fingerprint = collect().model_dump()
    fingerprint["load_average_start"] = load_start
    fingerprint["load_average_end"] = [round(value, 2) for value in os.getloadavg()]
    result = {
        "benchmark": "gateway_overhead",
        "variant": settings.variant,
        "engine": settings.engine,
        "model_dir": str(settings.model_dir),
        "batching": settings.batching.model_dump(),
        "engine_threads": settings.engine_threads,
        "method": {
            "gateway": "serving.app.create_app under serving.server.run_server (as `infopt serve`): pre-auth limits, "
            "auth, token bucket, priority queue, dynamic batcher, engine output checks, metrics; one unthrottled "
            "tenant; one process",
            "bare": "benchmarks/bare_engine_server.py: tokenize + same engine + same dynamic batching settings, "
            "no auth/buckets/priorities/metrics",
            "server": {
                "uvicorn": importlib.metadata.version("uvicorn"),
                "loop": "uvloop",
                "http": "httptools",
                "uvloop": importlib.metadata.version("uvloop"),
                "httptools": importlib.metadata.version("httptools"),
                "access_log": False,
                "processes": "one child process per server, 127.0.0.1, not CPU-pinned",
            },
            "client": {
                "name": "wrk",
                "version": subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split(" [")[0],
                "threads": 1,
                "mode": "closed loop, keep-alive, one connection per concurrent request",
                "request": 'POST /v1/classify {"texts": [one of 4 texts]}',
            },
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "duration_s": {"goal_level": args.duration, "other_levels": args.low_duration, "warmup": args.warmup},
            "order": "both servers warmed up, then per level gateway/bare alternating for each round; medians over rounds",
        },
        "levels": levels,
        "goal": {"concurrency": args.goal_concurrency, "added_p50_ms_max": 1.0, "throughput_ratio_min": 0.9},
        "goal_met": {
            "added_p50": goal_level["added_p50_ms"] <= 1.0,
            "throughput": goal_level["throughput_ratio"] >= 0.9,
        },
        "benchmark_wall_s": round(time.monotonic() - started, 1),
        "fingerprint": fingerprint,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    brief = {
        level: {
            side: {
                k: data[side][k]
                for k in (
                    "throughput_rps",
                    "latency_p50_ms",
                    "latency_p99_ms",
                    "mean_batch_size",
                    "server_cpu_ms_per_request",
                    "client_cpu_cores",
                )
            }
            for side in SIDES
        }
        | {k: data[k] for k in ("added_p50_ms", "throughput_ratio")}
        for level, data in levels.items()
    }
    print(
        json.dumps(
            {
                "levels": brief,
                "goal_met": result["goal_met"],
                "load_average": [load_start, fingerprint["load_average_end"]],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
