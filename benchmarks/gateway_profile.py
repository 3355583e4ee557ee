"""Where the gateway's time goes under load: py-spy samples the gateway process while wrk drives it.

Starts the gateway exactly as benchmarks/gateway_overhead.py does (`infopt serve`'s server, one
unthrottled tenant), warms it up, then runs wrk closed-loop at `--concurrency` for `--duration` seconds
while `py-spy record --format raw` samples every thread (GIL holders and not). Each sample is put in one
category by the innermost frame that names one (engine, tokenizer, request parsing, response encoding,
auth, buckets, queue/batcher, metrics, HTTP protocol, Starlette, gateway request path, event loop), per
thread (the event loop's thread vs engine and codec worker threads). The JSON gives the shares and the
top functions by own samples: the measured basis for the gateway's design.

    python -m benchmarks.gateway_profile --variant int8-dynamic
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.gateway_overhead import API_KEY, TEXTS, WRK_SCRIPT, run_wrk, start_server, stop_server, wait_ready

RESULTS = Path("benchmarks/results/gateway_profile.json")
# (category, substrings of a frame "function (file:line)"), innermost frame first wins
CATEGORIES = (
    ("engine (onnxruntime)", ("onnxruntime", "infopt/engines/")),
    ("tokenizer", ("serving/codec.py",)),
    ("request parsing (pydantic)", ("parse_classify", "parse_infer", "pydantic")),
    ("response encoding", ("softmax", "encode (serving/app.py", "orjson", "infer_response")),
    ("auth (sha256 + compare)", ("authenticate", "key_digest", "hashlib")),
    ("token buckets", ("serving/buckets.py", "admit_request", "admit_cost")),
    ("queue + batcher", ("serving/queue.py", "serving/batcher.py", "serving/service.py", "serving/balancer.py")),
    ("metrics", ("serving/metrics.py", "prometheus_client")),
    ("HTTP protocol (uvicorn/httptools)", ("uvicorn/", "httptools", "serving/server.py")),
    ("Starlette (routing, request, response)", ("starlette/",)),
    ("gateway request path", ("serving/app.py", "serving/tenancy.py", "serving/errors.py")),
    ("asyncio/uvloop scheduling", ("asyncio/", "uvloop")),
)


def classify(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, needles in CATEGORIES:
            if any(needle in frame for needle in needles):
                return name
    return "other"


def summarize(raw: str) -> dict:
    by_thread: dict[str, Counter[str]] = {}
    own: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0] if frames[0].startswith("thread") else "?"  # "thread (tid): name"
        kind = (
            "event loop thread"
            if "MainThread" in thread or thread == "?"
            else ("engine thread" if "engine" in thread else "codec thread" if "codec" in thread else "other thread")
        )
        by_thread.setdefault(kind, Counter())[classify(frames)] += count
        own[frames[-1]] += count
        total += count
    return {
        "samples": total,
        "by_thread": {
            kind: {
                "share_of_all_samples": round(sum(counts.values()) / total, 4),
                "categories": {name: round(value / sum(counts.values()), 4) for name, value in counts.most_common()},
            }
            for kind, counts in sorted(by_thread.items(), key=lambda item: -sum(item[1].values()))
        },
        "top_own_frames": [{"frame": frame, "share": round(count / total, 4)} for frame, count in own.most_common(25)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--manifest", type=Path, default=Path("artifacts/manifest.json"))
    parser.add_argument("--variant", default="int8-dynamic")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--raw-out", type=Path, default=None, help="also keep py-spy's collapsed stacks here")
    args = parser.parse_args()
    wrk, spy = shutil.which("wrk"), shutil.which("py-spy")
    if wrk is None or spy is None:
        raise SystemExit("needs wrk (apt-get install -y wrk) and py-spy (pip install py-spy)")
    from infopt.fingerprint import collect

    load_start = [round(value, 2) for value in os.getloadavg()]
    bodies = ", ".join(json.dumps(json.dumps({"texts": [text]})) for text in TEXTS)
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "classify.lua"
        script.write_text(WRK_SCRIPT.replace("{BODIES}", "{" + bodies + "}").replace("API_KEY", API_KEY))
        args.serve, args.port = None, 0
        server = start_server("gateway", args)
        try:
            wait_ready(server)
            run_wrk(wrk, script, server, args.concurrency, 2.0)
            raw_path = Path(folder) / "profile.txt"
            spy_process = subprocess.Popen(
                [spy, "record", "--format", "raw", "--threads", "--nonblocking", "--rate", str(args.rate),
                 "--duration", str(int(args.duration)), "--pid", str(server.process.pid), "--output", str(raw_path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            time.sleep(0.5)
            load = run_wrk(wrk, script, server, args.concurrency, args.duration - 1.0)
            _, spy_errors = spy_process.communicate(timeout=args.duration + 60)
            if spy_process.returncode != 0 or not raw_path.is_file():
                raise SystemExit(f"py-spy failed ({spy_process.returncode}): {spy_errors.decode()[-2000:]}")
            raw = raw_path.read_text()
            if args.raw_out is not None:
                args.raw_out.write_text(raw)
            summary = summarize(raw)
        finally:
            stop_server(server)
    fingerprint = collect().model_dump()
    fingerprint["load_average_start"] = load_start
    fingerprint["load_average_end"] = [round(value, 2) for value in os.getloadavg()]
    result = {
        "benchmark": "gateway_profile",
        "variant": args.variant,
        "method": {
            "server": "benchmarks.gateway_overhead --serve gateway (serving.server.run_server, one process)",
            "client": f"wrk -t1 -c{args.concurrency}, POST /v1/classify, one text",
            "profiler": f"py-spy record --format raw --threads --nonblocking --rate {args.rate}",
            "categories": {name: list(needles) for name, needles in CATEGORIES},
        },
        "load": {key: load[key] for key in ("throughput_rps", "latency_p50_ms", "latency_p99_ms", "server_cpu_cores")},
        "profile": summary,
        "python": sys.version.split()[0],
        "fingerprint": fingerprint,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"load": result["load"], "by_thread": summary["by_thread"]}, indent=2))


if __name__ == "__main__":
    main()
