"""scripts/gpu_challenge.sh on the CPU (its device and arguments overridden): what it packs, and its refusal
to start without budget. The GPU itself is not here; this is the same script and the same ladder code."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

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
        env=dict(os.environ, **env),
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
    assert files == ["challenge-env.txt", "challenge-log.txt", "challenge/ladder.json", "challenge/ladder.md"]
    assert all((tmp_path / name).stat().st_size <= 16 * 2**20 for name in files)
    result = json.loads((tmp_path / "challenge/ladder.json").read_text())
    assert result["status"] == "complete" and result["budget_s"] == 330
    assert any(item["what"].startswith("gateway") and "--no-gateway" in item["reason"] for item in result["skipped"])
    env = (tmp_path / "challenge-env.txt").read_text()
    assert "torch" in env and "budget 330 s" in env
