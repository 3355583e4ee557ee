"""scripts/gpu_challenge.sh on the CPU (its device and arguments overridden): what it packs, its refusal to
start without budget, and the partial ladder.json a SIGTERM (the script's `timeout`) leaves. The GPU itself is
not here; this is the same script and the same ladder code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("challenge", "infopt", "model_builds", "serving", "harness", "scripts")


def _repo_copy(workspace: Path) -> Path:
    """The workspace with the code beside it, as the GPU host's copy of the repository has both."""
    for name in PACKAGES:
        if not (workspace / name).exists():
            (workspace / name).symlink_to(REPO / name)
    return workspace


def _run(workspace: Path, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/gpu_challenge.sh", str(out)],
        cwd=_repo_copy(workspace),
        env=dict(os.environ, CHALLENGE_SITE=str(out / "site"), **env),
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_no_budget_left_means_no_start(ladder_workspace: Path, tmp_path: Path) -> None:
    completed = _run(ladder_workspace, tmp_path, CHALLENGE_DEADLINE=str(int(time.time()) + 30))
    assert completed.returncode == 2
    assert "not starting" in (tmp_path / "challenge-log.txt").read_text()
    assert (tmp_path / "challenge-env.txt").is_file()


@pytest.mark.slow
def test_script_packs_the_ladder_into_at_most_eight_files(ladder_workspace: Path, tmp_path: Path) -> None:
    completed = _run(
        ladder_workspace, tmp_path, CHALLENGE_DEVICE="cpu", CHALLENGE_ARGS="--reduced --no-gateway --threads 1"
    )
    assert completed.returncode == 0, completed.stdout[-3000:]
    files = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())
    files = [name for name in files if not name.startswith("site/")]
    assert files == [
        "challenge-env.txt",
        "challenge-log.txt",
        "challenge/baseline_predictions.npz",
        "challenge/ladder.json",
        "challenge/ladder.md",
    ]
    assert all((tmp_path / name).stat().st_size <= 16 * 2**20 for name in files)
    result = json.loads((tmp_path / "challenge/ladder.json").read_text())
    assert result["status"] == "complete" and result["budget_s"] == 400
    # step 1's prediction per scored test text, for paired teacher comparisons (benchmarks/teacher_comparison.py)
    predictions = np.load(tmp_path / "challenge/baseline_predictions.npz")["teacher"]
    assert predictions.shape == (result["context"]["test_examples"],)
    assert any(item["what"].startswith("gateway") and "--no-gateway" in item["reason"] for item in result["skipped"])
    env = (tmp_path / "challenge-env.txt").read_text()
    assert "torch" in env and "budget 400 s" in env and "installed into" in env
    log = (tmp_path / "challenge-log.txt").read_text()
    assert "step 6" in log and log.rstrip().endswith("gpu_challenge: exit 0")


@pytest.mark.slow
def test_sigterm_mid_ladder_leaves_a_partial_result_with_the_steps_measured(
    ladder_workspace: Path, tmp_path: Path
) -> None:
    """What the script's `timeout --signal=TERM` does to a ladder that overruns: the steps measured so far stay."""
    out = tmp_path / "challenge"
    options = ["--device", "cpu", "--reduced", "--no-gateway", "--threads", "1", "--out", str(out)]
    child = subprocess.Popen(
        [sys.executable, "-m", "challenge", *options],
        cwd=_repo_copy(ladder_workspace),
        env=dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        done: list[dict[str, object]] = []
        while time.monotonic() < deadline and child.poll() is None:  # wait for step 1 in the file (order, not time)
            path = out / "ladder.json"
            if path.is_file():  # replaced atomically by the ladder: never read half-written
                done = [step for step in json.loads(path.read_text())["steps"] if step.get("carried")]
                if done:
                    break
            time.sleep(0.2)
        assert done and child.poll() is None, "step 1 never appeared in ladder.json"
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 3, stderr[-2000:]
    result = json.loads((out / "ladder.json").read_text())
    assert result["status"] == "partial" and "signal 15" in result["error"]
    first = result["steps"][0]
    assert first["index"] == 1 and first["carried"]["point"]["throughput_rps"] > 0
    assert result["fingerprint"]["load_average_end"]
