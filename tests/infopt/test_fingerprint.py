"""Fingerprint against a real git repository: SHA, and what makes a tree dirty."""

from __future__ import annotations

import subprocess
from pathlib import Path

from infopt.fingerprint import collect


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True, capture_output=True
    )


def test_outputs_of_a_run_do_not_make_the_tree_dirty_but_code_does(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    (tmp_path / "metrics" / "train.json").write_text("{}\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "init")
    clean = collect("cpu", tmp_path)
    assert not clean.git_dirty and len(clean.git_sha) == 40

    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (tmp_path / "metrics" / "train.json").write_text('{"accuracy": 0.5}\n')
    assert not collect("cpu", tmp_path).git_dirty

    (tmp_path / "params.yaml").write_text("seed: 2\n")
    assert collect("cpu", tmp_path).git_dirty
