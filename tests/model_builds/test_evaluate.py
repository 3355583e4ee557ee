from __future__ import annotations

import numpy as np
import pytest

from infopt.params import EvaluateParams
from model_builds.baselines import majority_label, tfidf_logreg_predictions
from model_builds.evaluate import decide


def _predictions(labels: np.ndarray, wrong: list[int]) -> np.ndarray:
    predictions = labels.copy()
    predictions[wrong] = 1 - labels[wrong]
    return predictions


def test_non_inferiority_decision_on_crafted_predictions() -> None:
    labels = np.zeros(4000, dtype=np.int64)
    labels[::2] = 1
    baseline = labels.copy()  # right on every example
    config = EvaluateParams(max_accuracy_loss=0.01, bootstrap_resamples=2000)
    # 8 extra mistakes in 4000: loss 0.002, its upper bound ~0.0035 -> within the 1-point budget.
    close = decide("fp32", "torch", baseline, _predictions(labels, list(range(8))), labels, config, seed=0)
    assert close.loss.estimate == pytest.approx(0.002) and close.within_budget
    assert (close.baseline_only, close.variant_only) == (8, 0)
    # 60 mistakes: loss 0.015 > budget.
    far = decide("fp32", "torch", baseline, _predictions(labels, list(range(60))), labels, config, seed=0)
    assert far.loss.estimate == pytest.approx(0.015) and not far.within_budget
    assert far.mcnemar_p < 1e-10
    # 36 mistakes in 4000: loss 0.009 is inside the budget, but its upper bound (~0.012) is not.
    edge = decide("fp32", "torch", baseline, _predictions(labels, list(range(36))), labels, config, seed=0)
    assert edge.loss.estimate == pytest.approx(0.009) and edge.loss.high > 0.01 and not edge.within_budget


def test_majority_label_breaks_ties_towards_the_smaller_id() -> None:
    assert majority_label(np.array([2, 2, 1, 1, 0])) == 1
    assert majority_label(np.array([3, 3, 3, 0])) == 3


def test_tfidf_baseline_learns_a_separable_task() -> None:
    train = ["the kernel compiles code", "a compiler parses code", "atoms split under light", "molecules bond in light"]
    labels = np.array([0, 0, 1, 1])
    predictions = tfidf_logreg_predictions(
        train * 5, np.tile(labels, 5), ["code compiles", "light splits atoms"], seed=0
    )
    assert predictions.tolist() == [0, 1]


def test_evaluation_of_the_tiny_builds_is_consistent(tiny_builds) -> None:
    _builds, results, _ = tiny_builds
    base = results["fp32"]
    assert base["primary_engine"] == "onnxruntime" and set(base["engines"]) == {"torch", "onnxruntime"}
    assert "decision" not in base["engines"]["onnxruntime"]  # the baseline is not compared with itself
    torch_acc = base["engines"]["torch"]["quality"]["accuracy"]["estimate"]
    assert torch_acc == pytest.approx(base["engines"]["onnxruntime"]["quality"]["accuracy"]["estimate"])
    for _name, row in results.items():
        if row["status"] != "built" or _name == "fp32":
            continue
        for engine, cell in row["engines"].items():
            decision, quality = cell["decision"], cell["quality"]
            assert decision["engine"] == engine and quality["n"] == 16
            reference = base["engines"].get(engine, base["engines"]["onnxruntime"])["quality"]["accuracy"]["estimate"]
            assert decision["loss"]["estimate"] == pytest.approx(reference - quality["accuracy"]["estimate"])
            assert decision["within_budget"] == (decision["loss"]["high"] <= 0.02 + 1e-12)
            assert quality["accuracy"]["low"] <= quality["accuracy"]["estimate"] <= quality["accuracy"]["high"]
    assert set(results["int8-dynamic"]["engines"]) == {"onnxruntime"}
    assert results["int8-dynamic"]["engines"]["onnxruntime"]["providers"] == ["CPUExecutionProvider"]
    assert {cell["execution_device"] for cell in base["engines"].values()} == {"cpu"}
