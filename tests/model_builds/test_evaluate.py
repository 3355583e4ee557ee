from __future__ import annotations

import numpy as np
import pytest

from model_builds.evaluate import score


def test_accuracy_loss_and_budget_arithmetic() -> None:
    labels = np.array([0, 1, 1, 0, 1])
    baseline_logits = np.eye(2, dtype=np.float32)[labels]  # the baseline is right on all 5
    logits = baseline_logits.copy()
    logits[0] = [0.0, 2.0]  # one mistake -> accuracy 0.8
    row = score(
        logits,
        labels,
        2,
        baseline_accuracy=0.85,
        baseline_logits=baseline_logits,
        max_accuracy_loss=0.05,
        engine="torch",
    )
    assert row["accuracy"] == pytest.approx(0.8)
    assert row["accuracy_loss"] == pytest.approx(0.05)
    assert row["within_accuracy_budget"] is True  # loss == budget is within it
    assert row["agreement_with_baseline"] == pytest.approx(0.8)
    assert row["max_abs_logit_diff_vs_baseline"] == pytest.approx(2.0)
    strict = score(logits, labels, 2, 0.85, baseline_logits, 0.04, "torch")
    assert strict["within_accuracy_budget"] is False


def test_evaluation_of_the_tiny_builds_is_consistent(tiny_builds) -> None:
    _builds, results, _ = tiny_builds
    base = results["fp32"]
    assert base["engine"] == "onnxruntime" and base["accuracy_loss"] == 0.0 and base["agreement_with_baseline"] == 1.0
    assert set(base["engines"]) == {"torch", "onnxruntime"}
    assert base["engines"]["torch"]["accuracy"] == pytest.approx(base["engines"]["onnxruntime"]["accuracy"])
    for _name, row in results.items():
        if row["status"] != "built":
            continue
        assert row["engine"] == ("onnxruntime" if "onnxruntime" in row["engines"] else "torch")
        assert row["accuracy_loss"] == pytest.approx(base["accuracy"] - row["accuracy"])
        assert row["within_accuracy_budget"] == (row["accuracy_loss"] <= 0.02 + 1e-12)
        assert row["n_test"] == 16
    assert set(results["int8-dynamic"]["engines"]) == {"onnxruntime"}
    assert results["int8-dynamic"]["engines"]["onnxruntime"]["providers"] == ["CPUExecutionProvider"]
    assert {cell["execution_device"] for cell in base["engines"].values()} == {"cpu"}
