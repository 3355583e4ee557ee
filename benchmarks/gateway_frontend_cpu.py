"""The HTTP workers' CPU per request, this commit against an earlier one, on this machine.

In a multi-process gateway (`serving.workers >= 2`) the HTTP workers do each request's parsing, tokenization
and response encoding; on the GPU host they, not the engine, set the ceiling (docs/challenge.md). This runs
the gateway of each code version in turn (`--baseline` and HEAD, each checked out in a temporary git
worktree, so uncommitted edits stay out): two HTTP workers in front of the admission process, an engine that answers at
once (so only the front end costs), the pipeline's tokenizer and the test split's texts, driven closed-loop by
the ladder's load client (`challenge.loadclient`) with single texts and with `--texts` texts a request.
Rounds alternate between the versions; each round reads the workers' CPU (user + system) over the client's
measured window and divides by the requests answered in it.

    python -m benchmarks.gateway_frontend_cpu --baseline 4944073 --out benchmarks/results/gateway_frontend_cpu.json

Needs `data/prepared` and `artifacts/tokenizer` (`dvc repro`, or copies of the GPU run's in `.gpu/`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from challenge.gateway_child import API_KEY
from challenge.loadclient import ClientSpec, run_clients
from harness.child_server import free_port, stop, wait_ready
from infopt.fingerprint import collect
from infopt.paths import PREPARED_DIR, TOKENIZER_DIR
from model_builds.data import read_labels, read_split

# The server each version runs: its own serving code (PYTHONPATH), an engine that costs nothing.
SERVER = """
import sys
from pathlib import Path

import numpy as np

from challenge.gateway_child import load_tenant
from infopt.params import BatchingParams, ServingParams, SlaClass
from serving.settings import GatewaySettings
from serving.supervisor import run_supervisor

port, tokenizer, labels = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(",")


class Instant:
    name, device = "instant", "cpu"

    def infer(self, input_ids, attention_mask):
        return np.zeros((len(input_ids), len(labels)), dtype=np.float32)

    def close(self):
        pass


settings = GatewaySettings(
    model_name="frontend", variant="instant", engine="onnxruntime", labels=tuple(labels), max_seq_len=64,
    sla_classes={"premium": SlaClass(p99_ms=50, timeout_ms=5000, priority=0, weight=8, k8s_priority_value=100000)},
    tenants=(load_tenant("premium"),),
    batching=BatchingParams(mode="dynamic", max_batch_size=256, max_wait_ms=2),
    serving=ServingParams(queue_capacity=8192), model_dir=Path(tokenizer), tokenizer_dir=Path(tokenizer),
    host="127.0.0.1", port=port, log_level="warning",
)
sys.exit(run_supervisor(settings, workers=2, log_level="warning", engine_factory=lambda _settings: [Instant()]))
"""


def measure(code: Path, texts: list[str], labels: list[str], k: int, args: argparse.Namespace) -> dict[str, Any]:
    """One round: start `code`'s gateway, load it, read its HTTP workers' CPU over the measured window."""
    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        script = Path(scratch) / "server.py"
        script.write_text(SERVER)
        environment = {**os.environ, "PYTHONPATH": str(code), "TOKENIZERS_PARALLELISM": "false"}
        server = subprocess.Popen(
            [sys.executable, str(script), str(port), str(TOKENIZER_DIR.resolve()), ",".join(labels)],
            cwd=code,
            env=environment,
            start_new_session=True,
        )
        try:
            wait_ready(server, f"http://127.0.0.1:{port}/v2/health/ready", timeout_s=120.0)
            workers = [p for p in psutil.Process(server.pid).children() if "serving.worker" in " ".join(p.cmdline())]
            marks: dict[str, float] = {}

            def cpu() -> float:
                return sum(sum(w.cpu_times()[:2]) for w in workers)

            def on_window(start: float, end: float) -> None:
                def sample() -> None:
                    time.sleep(max(0.0, start - time.monotonic()))
                    marks["start"] = cpu()
                    time.sleep(max(0.0, end - time.monotonic()))
                    marks["end"] = cpu()

                threading.Thread(target=sample, daemon=True).start()

            spec = ClientSpec(
                ports=[port],
                api_key=API_KEY,
                texts=texts,
                connections=args.connections,
                warmup_s=args.warmup,
                duration_s=args.duration,
                texts_per_request=k,
            )
            result = run_clients(spec, 1, Path(scratch) / "client", timeout_s=120.0, on_window=on_window)
            time.sleep(0.3)  # the sampler's end reading
        finally:
            stop(server)
    if result.ok == 0 or "end" not in marks:
        raise SystemExit(f"no requests answered in the window ({result.model_dump()})")
    per_request = (marks["end"] - marks["start"]) / result.ok
    return {
        "requests": result.ok,
        "failed": result.status_429 + result.status_503 + result.expired + result.errors,
        "throughput_rps": round(result.throughput_rps, 1),
        "workers_cpu_us_per_request": round(per_request * 1e6, 1),
        "workers_cpu_us_per_text": round(per_request * 1e6 / k, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the earlier commit (a git ref)")
    parser.add_argument("--texts", type=int, default=16, help="texts per request in the batched runs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    began = time.time()
    load_at_start = [round(value, 2) for value in os.getloadavg()]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    baseline = subprocess.run(
        ["git", "rev-parse", args.baseline], capture_output=True, text=True, check=True
    ).stdout.strip()
    texts = [example.text for example in read_split(PREPARED_DIR, "test")][:2000]
    labels = read_labels(PREPARED_DIR)
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        versions = {name: Path(scratch) / name for name in ("baseline", "head")}
        for name, ref in (("baseline", baseline), ("head", head)):  # both clean: uncommitted edits stay out
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(versions[name]), ref], check=True, capture_output=True
            )
        try:
            for index in range(args.rounds):
                for k in (1, args.texts):
                    for name, code in versions.items() if index % 2 == 0 else reversed(versions.items()):
                        cell = measure(code, texts, labels, k, args)
                        rounds.setdefault(name, {}).setdefault(str(k), []).append(cell)
                        print(f"round {index + 1} {name} k={k}: {cell}", flush=True)
        finally:
            for tree in versions.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=False, capture_output=True)
    summary = {
        name: {
            k: {
                "workers_cpu_us_per_request_median": float(np.median([c["workers_cpu_us_per_request"] for c in cells])),
                "workers_cpu_us_per_request_range": [
                    min(c["workers_cpu_us_per_request"] for c in cells),
                    max(c["workers_cpu_us_per_request"] for c in cells),
                ],
                "workers_cpu_us_per_text_median": float(np.median([c["workers_cpu_us_per_text"] for c in cells])),
            }
            for k, cells in by_k.items()
        }
        for name, by_k in rounds.items()
    }
    result = {
        "benchmark": "gateway_frontend_cpu",
        "method": __doc__.split("\n\n")[1].replace("\n", " "),
        "versions": {"baseline": baseline, "head": head},  # each measured from a clean worktree of the commit
        "texts_per_request": [1, args.texts],
        "connections": args.connections,
        "window_s": args.duration,
        "rounds": rounds,
        "summary": summary,
        "load_average_at_start": load_at_start,
        "wall_s": round(time.time() - began, 1),
        "fingerprint": collect("cpu", repo=Path(".")).model_dump(mode="json"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
