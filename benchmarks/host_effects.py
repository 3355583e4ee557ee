"""Two host effects the gateway simulator's host model rests on, measured on this machine
(docs/agent.md, "The simulator"):

1. The interpreter lock: the engine on its executor thread (as the gateway runs it) takes longer when another
   thread of the same process runs Python, because the thread needs the lock to start and to hand its result
   back, and a busy thread lets it go only when it waits for I/O or when the switch interval forces it. Timed
   alone, beside a same-process thread running bursts of Python with a `sleep(0)` between them (the loop's
   work between I/O waits), and beside the same bursts in another process (no shared lock).
2. Waking an idle host: single requests through the real gateway (its own process on 127.0.0.1) one at a time,
   back to back and after exponential idle gaps; the gateway's own time (its Server-Timing header) and the
   client's.

    python -m benchmarks.host_effects --out benchmarks/results/host_effects.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.simulator_validation import build_model, measure_overhead, served_engine, start_gateway
from harness.child_server import free_port, stop, wait_ready


def python_bursts(stop_event: Any, burst_s: float) -> None:
    """Interpreter-bound work in bursts of `burst_s`, each followed by `sleep(0)` (an I/O wait's release)."""
    payload = {"texts": ["the kernel compiles the code"] * 4, "tenant": "acme"}
    while not stop_event.is_set():
        end = time.perf_counter() + burst_s
        while time.perf_counter() < end:
            json.loads(json.dumps(payload))
        time.sleep(0)


def summary_ms(samples: list[float]) -> dict[str, float]:
    values = np.asarray(samples) * 1000.0
    return {
        "p50": round(float(np.percentile(values, 50)), 4),
        "p99": round(float(np.percentile(values, 99)), 4),
        "mean": round(float(values.mean()), 4),
        "n": len(samples),
    }


def lock_wait(model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    engine, codec, rows = served_engine(model_dir, args)
    rng = random.Random(1)
    pool = ThreadPoolExecutor(1)  # the gateway's executor: one engine thread

    def timed(batches: int) -> list[float]:
        samples = []
        for _ in range(batches):
            ids, mask = codec.collate(rng.sample(rows, 1))
            began = time.perf_counter()
            pool.submit(engine.infer, ids, mask).result()
            samples.append(time.perf_counter() - began)
        return samples

    def beside(start: Callable[[], Any], finish: Callable[[Any], None]) -> dict[str, float]:
        handle = start()
        time.sleep(0.1)
        try:
            return summary_ms(timed(args.batches))
        finally:
            finish(handle)

    timed(50)  # warm-up
    result: dict[str, Any] = {"alone": summary_ms(timed(args.batches)), "same_process": {}, "other_process": {}}
    for burst_ms in args.bursts_ms:
        burst_s = burst_ms / 1000.0

        def start_thread(burst_s: float = burst_s) -> tuple[threading.Event, threading.Thread]:
            event = threading.Event()
            thread = threading.Thread(target=python_bursts, args=(event, burst_s), daemon=True)
            thread.start()
            return event, thread

        def stop_thread(handle: tuple[threading.Event, threading.Thread]) -> None:
            handle[0].set()
            handle[1].join()

        def start_process(burst_s: float = burst_s) -> tuple[Any, Any]:
            context = multiprocessing.get_context("spawn")
            event = context.Event()
            process = context.Process(target=python_bursts, args=(event, burst_s), daemon=True)
            process.start()
            return event, process

        def stop_process(handle: tuple[Any, Any]) -> None:
            handle[0].set()
            handle[1].join(timeout=10)

        result["same_process"][f"{burst_ms:g} ms"] = beside(start_thread, stop_thread)
        result["other_process"][f"{burst_ms:g} ms"] = beside(start_process, stop_process)
    pool.shutdown()
    engine.close()
    return result


def idle_wake(model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = start_gateway(args, model_dir, port)
    try:
        wait_ready(gateway, f"{url}/v2/health/ready", timeout_s=120.0)
        wake = {}
        for gap_ms in args.gaps_ms:  # the validation's own single-request calibration, at each idle gap
            client_s, gateway_s = asyncio.run(measure_overhead(url, args.requests, gap_ms / 1000.0))
            wake[f"{gap_ms:g} ms"] = {"client": summary_ms(client_s), "gateway": summary_ms(gateway_s)}
        return wake
    finally:
        stop(gateway)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--deployment", default="textcls-premium")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--batches", type=int, default=400, help="engine batches timed per condition")
    parser.add_argument("--bursts-ms", type=float, nargs="+", default=[0.2, 0.4, 1.0])
    parser.add_argument("--requests", type=int, default=400, help="single requests per idle gap")
    parser.add_argument("--gaps-ms", type=float, nargs="+", default=[0.0, 3.0, 10.0, 30.0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/host_effects.json"))
    args = parser.parse_args()

    from infopt.fingerprint import collect

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="infopt-host-effects-") as folder:
        model_dir = build_model(Path(folder) / "model", hidden=256, layers=2, heads=4, max_len=args.max_len)
        locks = lock_wait(model_dir, args)
        wake = idle_wake(model_dir, args)
    result = {
        "benchmark": "host_effects",
        "method": {
            "model": "the simulator validation's BERT encoder (random weights, hidden 256, 2 layers), ONNX Runtime "
            f"fp32, {args.threads} intra-op thread(s), batch 1 of its texts",
            "lock_wait": "engine.infer submitted to a one-thread executor (as serving/batcher.py does) and waited "
            f"for, {args.batches} batches per condition: alone; beside a thread of this process running Python "
            "bursts (JSON round trips) of the given length with sleep(0) between them; beside the same bursts in "
            "another process",
            "idle_wake": f"{args.requests} single requests (after 20 unmeasured) through the gateway in its own "
            "process, one at a time, each after an exponential idle gap of the given mean (0: back to back): "
            "benchmarks.simulator_validation's measure_overhead; client = this process's clock, gateway = its "
            "Server-Timing",
        },
        "lock_wait_ms": locks,
        "idle_wake_ms": wake,
        "wall_s": round(time.monotonic() - started, 1),
        "fingerprint": collect().model_dump(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"lock_wait_ms": locks, "idle_wake_ms": wake}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
