"""Gateway overhead: the same engine + batcher with and without the HTTP gateway, in one run.

(a) gateway: `create_app` under uvicorn in a child process on 127.0.0.1, driven over HTTP (httpx,
    keep-alive) with 100 concurrent closed-loop /v1/classify requests of one text each;
(b) direct: the same variant, engine, codec, queue and batcher (serving.service.ModelService) in this
    process, called by 100 concurrent coroutines without HTTP.
Written to benchmarks/results/gateway_overhead.json with the fingerprint. Goal: <= 1 ms added p50 and
>= 0.9x throughput; the file records whether it was met, whatever the outcome.

    python -m benchmarks.gateway_overhead --variant int8-dynamic [--model-dir artifacts/variants/int8-dynamic/onnx]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import httpx

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


def build_settings(params_path: Path, manifest_path: Path, variant: str, model_dir: Path | None) -> GatewaySettings:
    """The params' serving section and SLA classes, one unthrottled benchmark tenant in the batch class."""
    from infopt.manifest import load_manifest
    from serving.settings import settings_from_params

    params = load_params(params_path)
    if manifest_path.is_file():
        settings = settings_from_params(params, load_manifest(manifest_path), variant=variant, engine="onnxruntime", model_dir=model_dir)
    else:
        if model_dir is None:
            raise SystemExit(f"{manifest_path} not found: pass --model-dir (an ONNX artifact folder with its tokenizer)")
        config = json.loads((model_dir / "config.json").read_text())
        labels = tuple(config["id2label"][str(i)] for i in range(len(config["id2label"])))
        settings = GatewaySettings(
            model_name=variant, variant=variant, engine="onnxruntime", labels=labels, max_seq_len=params.model.max_seq_len,
            sla_classes=dict(params.sla_classes), tenants=(), batching=params.serving.batching, model_dir=model_dir,
            tokenizer_dir=model_dir, queue_capacity=params.serving.queue_capacity,
        )
    tenant = Tenant(
        name="bench", sla_class="batch", rate_per_s=1e9, burst=1_000_000_000, cost_center="bench",
        api_key_sha256=[hashlib.sha256(API_KEY.encode()).hexdigest()],
    )
    # One intra-op thread: on a small shared box, ONNX Runtime's spinning pool threads fight the HTTP
    # processes for cores; both sides of the comparison use the same engine settings.
    return replace(
        settings, tenants=(tenant,), queue_capacity=max(settings.queue_capacity, 1024), log_level="warning", engine_threads=1
    )


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from serving.app import create_app

    settings = build_settings(args.params, args.manifest, args.variant, args.model_dir)
    uvicorn.run(create_app(settings), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


async def _closed_loop(call, concurrency: int, count: int) -> tuple[list[float], float, int]:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    failures = 0
    issued = 0

    async def worker() -> None:
        nonlocal issued, failures
        while issued < count:
            index = issued
            issued += 1
            start = loop.time()
            if await call(TEXTS[index % len(TEXTS)]):
                latencies.append(loop.time() - start)
            else:
                failures += 1

    start = loop.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, loop.time() - start, failures


def _summary(latencies: list[float], elapsed: float, failures: int) -> dict[str, float | int]:
    from serving.loadgen import summarize

    summary = summarize(latencies)
    return {
        "requests_ok": len(latencies), "failures": failures, "elapsed_s": round(elapsed, 4),
        "throughput_rps": round(len(latencies) / elapsed, 2),
        "latency_p50_ms": summary.p50, "latency_p95_ms": summary.p95, "latency_p99_ms": summary.p99,
    }


async def run_direct(settings: GatewaySettings, concurrency: int, count: int, warmup: int) -> dict[str, float | int]:
    from serving.app import default_engine_factory
    from serving.codec import Codec
    from serving.metrics import GatewayMetrics
    from serving.service import ModelService
    from serving.tenancy import Tenancy

    service = ModelService(
        settings.model_name, default_engine_factory(settings), Codec(settings.tokenizer_dir, settings.max_seq_len),
        sla_classes=settings.sla_classes, batching=settings.batching, queue_capacity=settings.queue_capacity,
        metrics=GatewayMetrics(), policy=settings.load_balancing,
    )
    tenant = Tenancy(settings.tenants, settings.sla_classes).context("bench")
    service.start()
    loop = asyncio.get_running_loop()

    async def call(text: str) -> bool:
        await service.infer(service.codec.encode([text]), tenant, loop.time())
        return True

    await _closed_loop(call, concurrency, warmup)
    result = _summary(*await _closed_loop(call, concurrency, count))
    await service.stop(5.0)
    return result


async def run_gateway(url: str, concurrency: int, count: int, warmup: int) -> dict[str, float | int]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60, headers={"Authorization": f"Bearer {API_KEY}"}) as client:

        async def call(text: str) -> bool:
            response = await client.post("/v1/classify", json={"texts": [text]})
            return response.status_code == 200

        await _closed_loop(call, concurrency, warmup)
        return _summary(*await _closed_loop(call, concurrency, count))


async def _wait_ready(url: str, process: subprocess.Popen) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=2) as client:
        for _ in range(600):
            if process.poll() is not None:
                raise SystemExit(f"gateway exited with {process.returncode}")
            try:
                if (await client.get("/v2/health/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"gateway at {url} never became ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--manifest", type=Path, default=Path("artifacts/manifest.json"))
    parser.add_argument("--variant", default="int8-dynamic")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--serve", action="store_true", help="internal: run only the gateway (the child process)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    from infopt.fingerprint import collect
    from serving.tenancy import Tenancy

    settings = build_settings(args.params, args.manifest, args.variant, args.model_dir)
    Tenancy(settings.tenants, settings.sla_classes)  # fail here, not in the child, on a bad tenant
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    child_args = [sys.executable, "-m", "benchmarks.gateway_overhead", "--serve", "--port", str(port),
                  "--params", str(args.params), "--manifest", str(args.manifest), "--variant", args.variant]
    if args.model_dir is not None:
        child_args += ["--model-dir", str(args.model_dir)]
    process = subprocess.Popen(child_args, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(_wait_ready(url, process))
        gateway = asyncio.run(run_gateway(url, args.concurrency, args.requests, args.warmup))
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    direct = asyncio.run(run_direct(settings, args.concurrency, args.requests, args.warmup))
    added_p50 = round(gateway["latency_p50_ms"] - direct["latency_p50_ms"], 3)  # type: ignore[operator]
    ratio = round(gateway["throughput_rps"] / direct["throughput_rps"], 4)  # type: ignore[operator]
    result = {
        "benchmark": "gateway_overhead",
        "variant": settings.variant,
        "engine": settings.engine,
        "model_dir": str(settings.model_dir),
        "batching": settings.batching.model_dump(),
        "engine_threads": settings.engine_threads,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "warmup": args.warmup,
        "method": {
            "gateway": "uvicorn child process on 127.0.0.1, httpx keep-alive client, POST /v1/classify, one text each",
            "direct": "same engine, codec, queue and batcher (ModelService.infer) in-process, no HTTP",
        },
        "gateway": gateway,
        "direct": direct,
        "added_p50_ms": added_p50,
        "throughput_ratio": ratio,
        "goal": {"added_p50_ms_max": 1.0, "throughput_ratio_min": 0.9},
        "goal_met": {"added_p50": added_p50 <= 1.0, "throughput": ratio >= 0.9},
        "fingerprint": collect().model_dump(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("gateway", "direct", "added_p50_ms", "throughput_ratio", "goal_met")}, indent=2))


if __name__ == "__main__":
    main()
