"""benchmarks/teacher_comparison.py on crafted runs whose answers are known: paired where both sides have
per-example predictions, Newcombe's conservative interval where a ladder kept only its count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from challenge.ladder import BASELINE_PREDICTIONS

REPO = Path(__file__).resolve().parents[2]
N = 2000


def _labels(tmp_path: Path) -> tuple[Path, np.ndarray]:
    labels = np.random.default_rng(0).integers(0, 5, size=N)
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": int(y)}) + "\n" for i, y in enumerate(labels)))
    return path, labels


def _right_on(labels: np.ndarray, correct: int, seed: int) -> np.ndarray:
    """Predictions right on exactly `correct` examples (wrong ones shifted by one class)."""
    right = np.zeros(len(labels), dtype=bool)
    right[np.random.default_rng(seed).choice(len(labels), correct, replace=False)] = True
    return np.where(right, labels, (labels + 1) % 5).astype(np.int16)


def _pipeline_run(folder: Path, labels: np.ndarray) -> None:
    (folder / "artifacts").mkdir(parents=True)
    (folder / "metrics").mkdir()
    columns = {
        "fp32.torch": _right_on(labels, 1400, 1),
        "_tfidf_logreg": _right_on(labels, 1380, 2),
        "_majority": np.zeros(N, dtype=np.int16),
    }
    np.savez(folder / "artifacts/predictions.npz", allow_pickle=False, **columns)
    report = {"baseline": "fp32", "n_test": N, "fingerprint": {"git_sha": "abc", "device": "cpu"}}
    (folder / "metrics/accuracy.json").write_text(json.dumps(report))


def _ladder(folder: Path, correct: int, predictions: np.ndarray | None) -> None:
    folder.mkdir(parents=True)
    accuracy = {"n": N, "accuracy": {"estimate": correct / N, "low": 0.0, "high": 1.0, "confidence": 0.95}}
    ladder = {
        "context": {"test_subsampled_from": None, "teacher_sha256": "f00"},
        "steps": [{"candidates": [{"accuracy": accuracy, "reason": None}]}],
        "fingerprint": {"git_sha": "def", "device": "cuda"},
    }
    (folder / "ladder.json").write_text(json.dumps(ladder))
    if predictions is not None:
        np.savez(folder / BASELINE_PREDICTIONS, teacher=predictions)


def _compare(tmp_path: Path, labels_path: Path, ladder: Path) -> dict[str, Any]:
    out = tmp_path / "result.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.teacher_comparison", "--run", f"tiny={tmp_path / 'run'}",
         "--ladder", f"base={ladder}", "--labels", str(labels_path), "--out", str(out)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return json.loads(out.read_text())


def _pair(result: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    return next(p for p in result["pairs"] if {p["a"], p["b"]} == {a, b})


def test_a_ladder_with_only_a_count_is_compared_with_newcombes_interval(tmp_path: Path) -> None:
    labels_path, labels = _labels(tmp_path)
    _pipeline_run(tmp_path / "run", labels)
    _ladder(tmp_path / "ladder", 1700, None)
    result = _compare(tmp_path, labels_path, tmp_path / "ladder")
    assert result["accuracy"]["base teacher"]["estimate"] == pytest.approx(0.85)
    assert result["accuracy"]["tiny teacher"]["estimate"] == pytest.approx(0.70)
    base_vs_tiny = _pair(result, "tiny teacher", "base teacher")
    assert base_vs_tiny["method"].startswith("Newcombe")
    assert base_vs_tiny["b_significantly_better"] and not base_vs_tiny["a_significantly_better"]
    # 70.0 % vs 69.0 % on 2,000 examples: not separable, either way
    tiny_vs_tfidf = _pair(result, "tiny teacher", "tf-idf + logistic regression")
    assert tiny_vs_tfidf["method"].startswith("paired")
    assert not tiny_vs_tfidf["a_significantly_better"] and not tiny_vs_tfidf["b_significantly_better"]


def test_a_ladder_with_predictions_is_paired_and_tighter_than_newcombe(tmp_path: Path) -> None:
    labels_path, labels = _labels(tmp_path)
    _pipeline_run(tmp_path / "run", labels)
    tiny = np.load(tmp_path / "run/artifacts/predictions.npz")["fp32.torch"]
    # right wherever tiny is, and on 40 more: +2.0 points, every discordant pair on one side
    better = tiny.copy()
    wrong = np.flatnonzero(tiny != labels)[:40]
    better[wrong] = labels[wrong]
    _ladder(tmp_path / "count", 1440, None)
    _ladder(tmp_path / "paired", 1440, better)
    unpaired = _pair(_compare(tmp_path, labels_path, tmp_path / "count"), "tiny teacher", "base teacher")
    paired = _pair(_compare(tmp_path, labels_path, tmp_path / "paired"), "tiny teacher", "base teacher")
    assert paired["method"].startswith("paired") and paired["b_only"] == 40 and paired["a_only"] == 0
    assert paired["b_significantly_better"] and not unpaired["b_significantly_better"]


def test_a_ladder_scored_on_another_split_is_refused(tmp_path: Path) -> None:
    labels_path, labels = _labels(tmp_path)
    _pipeline_run(tmp_path / "run", labels)
    _ladder(tmp_path / "ladder", 1700, None)
    ladder = json.loads((tmp_path / "ladder/ladder.json").read_text())
    ladder["steps"][0]["candidates"][0]["accuracy"]["n"] = N - 1
    (tmp_path / "ladder/ladder.json").write_text(json.dumps(ladder))
    with pytest.raises(subprocess.CalledProcessError) as failure:
        _compare(tmp_path, labels_path, tmp_path / "ladder")
    assert "not the same split" in failure.value.stderr
