"""`dvc exp run -S` on the committed params.yaml changes exactly the value it sets (a real DVC experiment): the
file is kept in the form DVC writes, so an experiment's diff is that value alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"


def _run(args: list[str], cwd: Path) -> str:
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{args}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result.stdout


def expected_after(original: str, section: str, key: str, new_value: list[str]) -> str:
    """The original text with `key`'s value under `section:` replaced (a scalar on its line, or a block list)."""
    lines = original.splitlines(keepends=True)
    start = (
        lines.index(f"{section}:\n")
        if f"{section}:\n" in lines
        else next(i for i, line in enumerate(lines) if line.startswith(f"{section}:"))
    )
    at = next(i for i in range(start, len(lines)) if lines[i].startswith(f"  {key}:"))
    end = at + 1
    while end < len(lines) and lines[end].startswith("  - "):
        end += 1
    head = lines[at] if end > at + 1 else ""
    return "".join([*lines[:at], head, *(line + "\n" for line in new_value), *lines[end:]])


@pytest.mark.parametrize(
    ("assignment", "section", "key", "new_value"),
    [
        ("train.epochs=2", "train", "epochs", ["  epochs: 2"]),
        ("benchmark.batch_sizes=[1,8]", "benchmark", "batch_sizes", ["  - 1", "  - 8"]),
    ],
)
def test_an_experiment_changes_only_the_value_it_sets(
    tmp_path: Path, assignment: str, section: str, key: str, new_value: list[str]
) -> None:
    original = (ROOT / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(original)
    (tmp_path / "dvc.yaml").write_text(
        f"stages:\n  echo:\n    cmd: python -c \"print('ok')\"\n    params:\n      - {section}.{key}\n"
    )
    _run(["git", "init", "-q"], tmp_path)
    _run([str(DVC), "init", "-q"], tmp_path)
    _run([str(DVC), "config", "core.analytics", "false"], tmp_path)
    _run(["git", "add", "-A"], tmp_path)
    _run(["git", "commit", "-q", "-m", "params"], tmp_path)
    _run([str(DVC), "exp", "run", "-S", assignment], tmp_path)
    after = (tmp_path / "params.yaml").read_text()
    diff = _run(["git", "diff", "--", "params.yaml"], tmp_path)
    assert after == expected_after(original, section, key, new_value), diff
