"""Gateway overhead: the full gateway vs the bare engine server, both over HTTP, same client, one run.

(a) gateway: `serving.app.create_app` (auth, token bucket, priority queue, dynamic batcher, metrics)
    served as `infopt serve` serves it, one unthrottled benchmark tenant, once per `--workers` value:
    1 = one process (serving.server.run_server: uvloop, httptools with the pre-auth limits, no access
    log); N >= 2 = N HTTP worker processes in front of one admission/engine process
    (serving.supervisor.run_supervisor);
(b) bare:    benchmarks/bare_engine_server.py: a minimal Starlette app that tokenizes and calls the same
    engine (same variant, engine_threads) with the same dynamic batching settings and nothing else,
    under the same uvicorn setup: the engine "called directly" as a user without the gateway deploys it.

Each server runs on 127.0.0.1 in its own child process tree, started in its own session (`--session own`,
the default): Linux's autogroup scheduler then gives each server, whatever its process count, the same
CPU weight against the client and against everything else on the box, as equal CPU requests give pods
on a node; `--session shared` keeps the servers in the client's session instead. Not CPU-pinned: a
multi-process server exists to use several cores, and the box has two. All servers are started and
warmed up, then the client (wrk, one thread, keep-alive, POST /v1/classify with one text, four texts in
rotation) runs closed-loop at each concurrency level for a fixed duration, alternating the servers for
`--rounds` rounds so a shared machine's load drift hits all alike; each figure is the median over its
rounds (the spread is kept per round). Per run: throughput, p50/p95/p99 (wrk's latency histogram), the
client's CPU (rusage of the wrk child), the server's CPU (/proc/<pid>/stat of its whole process tree; for
a multi-process gateway also split into the admission process and its workers), mean batch size (the
gateway: infopt_batch_size from its own /metrics; bare: its /stats counters), and the load average. The
best gateway (highest throughput at --goal-concurrency) is compared with bare; the goal (<= 1 ms added
p50, >= 0.9x throughput, at --goal-concurrency) is computed from the numbers and recorded whatever the
outcome, for every worker count measured.

Without a pipeline manifest, `--model-dir DIR --build-model` builds the int8-dynamic variant's graph
(the params' model preset, untrained weights, optimum's dynamic per-channel INT8) into DIR once: the same
engine cost per batch as the trained variant, which overhead is about; accuracy is not measured here.

    python -m benchmarks.gateway_overhead --variant int8-dynamic --workers 1 2 3 [--model-dir DIR --build-model]
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
from dataclasses import dataclass, field, replace
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
BARE = "bare"
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


def build_model(model_dir: Path, params_path: Path) -> dict[str, Any]:
    """The int8-dynamic variant's graph with untrained weights: the params' model preset exported to ONNX
    and quantized as model_builds/variants/int8_onnx.py does, with the pipeline's tokenizer."""
    from transformers import PreTrainedTokenizerFast

    from infopt.paths import TOKENIZER_DIR
    from model_builds.modeling import new_classifier, save_classifier
    from model_builds.variants.int8_onnx import quantize_dynamic
    from model_builds.variants.onnx_export import copy_side_files, export_onnx

    params = load_params(params_path)
    arch = params.model.presets[params.model.preset]
    tokenizer_dir = Path(TOKENIZER_DIR)
    if not (tokenizer_dir / "tokenizer.json").is_file():
        raise SystemExit(f"{tokenizer_dir}/tokenizer.json not found: run the pipeline's tokenizer stage (dvc repro)")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))
    labels = [f"class-{index}" for index in range(45)]  # WordNet's 45 supersenses: the classifier head's width
    model = new_classifier(arch, tokenizer, params.model.max_seq_len, labels, seed=params.seed)
    with tempfile.TemporaryDirectory(prefix="infopt-overhead-model-") as scratch:
        save_classifier(model, tokenizer, Path(scratch) / "hf")
        export_onnx(Path(scratch) / "hf", Path(scratch) / "fp32", params.model.max_seq_len)
        model_dir.mkdir(parents=True, exist_ok=True)
        quantize_dynamic(Path(scratch) / "fp32", model_dir / "model.onnx", per_channel=True)
        copy_side_files(Path(scratch) / "fp32", model_dir)
    return describe_built_model(params_path)


def describe_built_model(params_path: Path) -> dict[str, Any]:
    params = load_params(params_path)
    return {
        "built_by": "benchmarks.gateway_overhead --build-model",
        "weights": "untrained (seeded): the overhead needs the variant's cost per batch, not its accuracy",
        "architecture": {"preset": params.model.preset, **params.model.presets[params.model.preset].model_dump()},
        "max_seq_len": params.model.max_seq_len,
        "labels": 45,
        "quantization": "optimum ORTQuantizer avx512_vnni, dynamic, per-channel (as the int8-dynamic variant)",
    }


def serve(args: argparse.Namespace) -> None:
    """The child process: one server on 127.0.0.1:args.port. The gateway runs as `infopt serve` runs it
    (serving.server.run_server for one process, serving.supervisor.run_supervisor for several workers);
    the bare app under plain uvicorn with the same loop, parser and logging (uvloop, httptools, no access
    log)."""
    settings = build_settings(args.params, args.manifest, args.variant, args.model_dir)
    if args.serve == "gateway":
        from serving.app import create_app
        from serving.server import run_server
        from serving.supervisor import run_supervisor

        if args.serve_workers == 1:
            run_server(create_app(settings), host="127.0.0.1", port=args.port, log_level="warning")
        else:
            settings = replace(settings, host="127.0.0.1", port=args.port)
            sys.exit(run_supervisor(settings, workers=args.serve_workers, log_level="warning"))
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
def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None  # gone


def process_cpu(pid: int) -> float:
    """utime + stime of one process, all its threads (fields 14, 15 of /proc/<pid>/stat), in seconds."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


@dataclass
class Server:
    side: str  # "bare" or "gateway-<N>w"
    url: str
    process: subprocess.Popen
    workers: int = 0  # gateway HTTP worker processes (0: bare)
    worker_pids: list[int] = field(default_factory=list)

    def cpu_seconds(self) -> tuple[float, float]:
        """(the main process, its worker processes): CPU seconds so far, all threads."""
        return process_cpu(self.process.pid), sum(process_cpu(pid) for pid in self.worker_pids)

    def batch_counters(self) -> tuple[float, float]:
        """(batches, rows) so far: the gateway's own infopt_batch_size histogram, or the bare server's /stats."""
        if self.side == BARE:
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


def start_server(side: str, args: argparse.Namespace, workers: int = 0) -> Server:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "benchmarks.gateway_overhead",
        "--serve",
        "gateway" if workers else BARE,
        "--serve-workers",
        str(max(1, workers)),
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
    process = subprocess.Popen(command, env=dict(os.environ), start_new_session=args.session == "own")
    return Server(side, f"http://127.0.0.1:{port}", process, workers=workers)


def wait_ready(server: Server, timeout_s: float = 180.0) -> None:
    path = "/v2/health/ready" if server.workers else "/health"
    try:
        child_server.wait_ready(
            server.process,
            server.url + path,
            timeout_s=timeout_s,
            is_ready=lambda response: response.status_code == 200 and bool(response.json().get("ready")),
        )
    except child_server.ChildServerError as error:
        raise SystemExit(f"{server.side} server: {error}") from None
    if server.workers > 1:
        deadline = time.monotonic() + timeout_s
        while len(server.worker_pids) < server.workers:  # the supervisor's children: its HTTP workers
            if time.monotonic() > deadline:
                raise SystemExit(f"{server.side}: {len(server.worker_pids)} of {server.workers} workers found")
            time.sleep(0.2)
            server.worker_pids = children(server.process.pid)


def stop_server(server: Server) -> None:
    child_server.stop(server.process)


def run_wrk(wrk: str, script: Path, server: Server, connections: int, duration_s: float) -> dict[str, Any]:
    """One closed-loop wrk run; wrk's summary plus client CPU, server CPU, mean batch size and load."""
    batches_before, rows_before = server.batch_counters()
    main_before, workers_before = server.cpu_seconds()
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
    main_after, workers_after = server.cpu_seconds()
    main_cpu, workers_cpu = main_after - main_before, workers_after - workers_before
    server_cpu = main_cpu + workers_cpu
    batches_after, rows_after = server.batch_counters()
    summary_lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not summary_lines:
        raise SystemExit(f"wrk failed ({completed.returncode}): {completed.stdout}\n{completed.stderr}")
    summary = json.loads(summary_lines[-1])
    duration = summary["duration_us"] / 1e6
    failures = summary["non_2xx_3xx"] + summary["socket_errors"] + summary["timeouts"]
    client_cpu = (client_after.ru_utime - client_before.ru_utime) + (client_after.ru_stime - client_before.ru_stime)
    batches = batches_after - batches_before
    requests = summary["requests"]
    split = {}
    if server.workers > 1 and requests:
        split = {
            "admission_cpu_ms_per_request": round(1000 * main_cpu / requests, 3),
            "workers_cpu_ms_per_request": round(1000 * workers_cpu / requests, 3),
        }
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
        "server_cpu_ms_per_request": round(1000 * server_cpu / requests, 3) if requests else None,
        **split,
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
    "admission_cpu_ms_per_request",
    "workers_cpu_ms_per_request",
)


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {
        "failures": sum(run["failures"] for run in runs),
        "requests": sum(run["requests"] for run in runs),
    }
    for key in MEDIAN_KEYS:
        values = [run[key] for run in runs if run.get(key) is not None]
        if values:
            merged[key] = round(statistics.median(values), 3)
    for key in ("throughput_rps", "latency_p50_ms"):
        values = [run[key] for run in runs]
        merged[f"{key}_range"] = [min(values), max(values)]  # the spread over the rounds
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
    parser.add_argument("--build-model", action="store_true", help="build the variant's graph into --model-dir")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="gateway worker counts to measure")
    parser.add_argument("--session", choices=("own", "shared"), default="own", help="servers' session (see above)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 100])
    parser.add_argument("--goal-concurrency", type=int, default=100)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run at the goal concurrency")
    parser.add_argument("--low-duration", type=float, default=3.0, help="seconds per run at the other levels")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per server and level")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load per server before measuring")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--serve", choices=("gateway", BARE), help="internal: run only this server (the child)")
    parser.add_argument("--serve-workers", type=int, default=1, help="internal: the gateway child's workers")
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
    model: dict[str, Any] = {"source": "manifest" if args.model_dir is None else str(args.model_dir)}
    if args.build_model:
        if args.model_dir is None:
            raise SystemExit("--build-model needs --model-dir (where to build it)")
        if (args.model_dir / "model.onnx").is_file():
            model = describe_built_model(args.params)
        else:
            model = build_model(args.model_dir, args.params)
    settings = build_settings(args.params, args.manifest, args.variant, args.model_dir)
    Tenancy(settings.tenants, settings.sla_classes)  # fail here, not in the child, on a bad tenant
    sides = [f"gateway-{count}w" for count in args.workers] + [BARE]
    bodies = ", ".join(json.dumps(json.dumps({"texts": [text]})) for text in TEXTS)
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "classify.lua"
        script.write_text(WRK_SCRIPT.replace("{BODIES}", "{" + bodies + "}").replace("API_KEY", API_KEY))
        servers = [start_server(f"gateway-{count}w", args, workers=count) for count in args.workers]
        servers.append(start_server(BARE, args))
        try:
            for server in servers:
                wait_ready(server)
            for server in servers:
                run_wrk(wrk, script, server, args.goal_concurrency, args.warmup)
            runs: dict[int, dict[str, list[dict[str, Any]]]] = {}
            for connections in args.concurrency:
                duration = args.duration if connections == args.goal_concurrency else args.low_duration
                runs[connections] = {side: [] for side in sides}
                for _ in range(args.rounds):
                    for server in servers:
                        runs[connections][server.side].append(run_wrk(wrk, script, server, connections, duration))
        finally:
            for server in servers:
                stop_server(server)
    medians = {level: {side: median_of(by_side[side]) for side in sides} for level, by_side in runs.items()}
    goal = medians[args.goal_concurrency]
    best = max(args.workers, key=lambda count: goal[f"gateway-{count}w"]["throughput_rps"])
    levels: dict[str, dict[str, Any]] = {}
    for level, by_side in medians.items():
        gateway, bare = by_side[f"gateway-{best}w"], by_side[BARE]
        levels[str(level)] = {
            "gateway": gateway,
            BARE: bare,
            **compare(gateway, bare),
            "by_workers": {
                str(count): {"gateway": by_side[f"gateway-{count}w"], **compare(by_side[f"gateway-{count}w"], bare)}
                for count in args.workers
            },
        }
    goal_level = levels[str(args.goal_concurrency)]
    fingerprint = collect().model_dump()
    fingerprint["load_average_start"] = load_start
    fingerprint["load_average_end"] = [round(value, 2) for value in os.getloadavg()]
    result = {
        "benchmark": "gateway_overhead",
        "variant": settings.variant,
        "engine": settings.engine,
        "model_dir": str(settings.model_dir),
        "model": model,
        "batching": settings.batching.model_dump(),
        "engine_threads": settings.engine_threads,
        "workers_measured": args.workers,
        "workers_chosen": best,
        "workers_chosen_why": (
            f"the highest median throughput at {args.goal_concurrency} concurrent requests among "
            f"{args.workers} on this machine ({os.cpu_count()} cores shared with the client and other users)"
        ),
        "method": {
            "gateway": "the gateway as `infopt serve` runs it: serving.server.run_server for one process, "
            "serving.supervisor.run_supervisor (N HTTP workers, one admission/engine process) for more; pre-auth "
            "limits, auth, token bucket, priority queue, dynamic batcher, engine output checks, metrics; one "
            "unthrottled tenant (charge: rows)",
            BARE: "benchmarks/bare_engine_server.py: tokenize + same engine + same dynamic batching settings, "
            "no auth/buckets/priorities/metrics, one process",
            "server": {
                "uvicorn": importlib.metadata.version("uvicorn"),
                "loop": "uvloop",
                "http": "httptools",
                "uvloop": importlib.metadata.version("uvloop"),
                "httptools": importlib.metadata.version("httptools"),
                "access_log": False,
                "processes": "each server its own child process tree on 127.0.0.1, not CPU-pinned; "
                + (
                    "each started in its own session: one autogroup, so one CPU weight per server whatever "
                    "its process count (like equal CPU requests of pods on a node)"
                    if args.session == "own"
                    else "in the client's session (one autogroup shared with wrk)"
                ),
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
            "order": "all servers warmed up, then per level the servers in turn for each round; medians over "
            "rounds, each round kept, *_range = [min, max] over the rounds",
            "levels": "`gateway` is the chosen worker count; `by_workers` has every count measured",
        },
        "levels": levels,
        "goal": {"concurrency": args.goal_concurrency, "added_p50_ms_max": 1.0, "throughput_ratio_min": 0.9},
        "goal_met": {
            "added_p50": goal_level["added_p50_ms"] <= 1.0,
            "throughput": goal_level["throughput_ratio"] >= 0.9,
        },
        "goal_met_by_workers": {
            str(count): {
                "added_p50": data["added_p50_ms"] <= 1.0,
                "throughput": data["throughput_ratio"] >= 0.9,
            }
            for count, data in ((int(c), d) for c, d in goal_level["by_workers"].items())
        },
        "benchmark_wall_s": round(time.monotonic() - started, 1),
        "fingerprint": fingerprint,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    brief_keys = (
        "throughput_rps",
        "throughput_rps_range",
        "latency_p50_ms",
        "latency_p99_ms",
        "server_cpu_ms_per_request",
    )
    brief = {
        level: {side: {k: medians[int(level)][side].get(k) for k in brief_keys} for side in sides}
        | {f"{count}w": {k: data["by_workers"][str(count)][k] for k in ("added_p50_ms", "throughput_ratio")}
           for count in args.workers}
        for level, data in levels.items()
    }  # fmt: skip
    print(
        json.dumps(
            {
                "levels": brief,
                "workers_chosen": best,
                "goal_met": result["goal_met"],
                "load_average": [load_start, fingerprint["load_average_end"]],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
