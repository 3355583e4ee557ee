"""dashboard/sources.py: the commit a result file is credited to."""

from __future__ import annotations

import json
from pathlib import Path

from dashboard.sources import load


def _result(path: Path, git_sha: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"value": 1, "fingerprint": {"git_sha": git_sha, "timestamp": "2026-11-30"}}))


def test_a_file_without_a_commit_takes_the_one_its_folder_records(tmp_path: Path) -> None:
    _result(tmp_path / "results/gpu/run/sub/result.json", "unknown")
    (tmp_path / "results/gpu/run/provenance.json").write_text(json.dumps({"git_sha": "5705d33b9b66ec15"}))
    source = load(tmp_path, "results/gpu/run/sub/result.json")
    assert source is not None and source.provenance.git_sha == "5705d33b9b"


def test_a_recorded_commit_is_never_overridden_and_none_is_invented(tmp_path: Path) -> None:
    _result(tmp_path / "results/run/known.json", "abcdef1234567")
    _result(tmp_path / "results/other/unknown.json", "unknown")
    (tmp_path / "results/run/provenance.json").write_text(json.dumps({"git_sha": "5705d33b9b66ec15"}))
    (tmp_path / "provenance.json").write_text(json.dumps({"git_sha": "outside-the-root's-results"}))
    known, unknown = load(tmp_path, "results/run/known.json"), load(tmp_path, "results/other/unknown.json")
    assert known is not None and known.provenance.git_sha == "abcdef1234"
    assert unknown is not None and unknown.provenance.git_sha == "unknown"
