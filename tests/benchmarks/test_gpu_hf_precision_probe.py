"""The HF precision probe is a GPU benchmark: on a host without CUDA it refuses with a message, writes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="this checks the refusal on a host without CUDA")
def test_probe_refuses_without_cuda(tmp_path: Path) -> None:
    out = tmp_path / "probe.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_hf_precision_probe", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "this probe needs a CUDA GPU" in done.stderr
    assert not out.exists()
