"""Paired comparison of teachers (and the reference baselines) on the same test split, across pipeline runs.

    python -m benchmarks.teacher_comparison --run tiny=RUN [--run ...] [--ladder bert-base=LADDER_DIR] --out R.json

Each RUN folder holds what a pipeline run wrote: artifacts/predictions.npz (evaluate: the predicted label of
every test example per "<variant>.<engine>", plus "_tfidf_logreg" and "_majority") and metrics/accuracy.json
(its fingerprint). A LADDER_DIR is a challenge ladder's output (`infopt challenge`): its step 1 scores the
pipeline's teacher artifact on the whole test split; baseline_predictions.npz holds its per-example
predictions (ladders written before that file existed keep only the count of correct answers). The runs must
share the test split (same data, seed and fractions: `data.max_train` only subsamples train). A pair with
predictions on both sides is a paired bootstrap of the accuracy difference with McNemar's exact test; a pair
with only a count on one side gets Newcombe's interval of the difference, which is conservative on a shared
split (infopt/stats.py). "A beats B" only when the lower bound of A - B is above zero.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from challenge.ladder import BASELINE_PREDICTIONS
from infopt.fingerprint import collect
from infopt.stats import paired_difference, unpaired_difference, wilson_interval


def test_labels(path: Path) -> np.ndarray:
    return np.array([json.loads(line)["label"] for line in path.read_text().splitlines() if line.strip()])


def load_run(folder: Path, engine: str) -> dict[str, Any]:
    predictions = np.load(folder / "artifacts/predictions.npz")
    report = json.loads((folder / "metrics/accuracy.json").read_text())
    key = f"{report['baseline']}.{engine}"
    if key not in predictions:
        raise SystemExit(f"{folder}: no predictions for {key}; it has {sorted(predictions)}")
    return {
        "teacher": predictions[key],
        "tfidf_logreg": predictions["_tfidf_logreg"],
        "majority": predictions["_majority"],
        "fingerprint": report["fingerprint"],
        "n_test": report["n_test"],
    }


def load_ladder(folder: Path) -> dict[str, Any]:
    """Step 1 of a challenge ladder: the teacher on the whole test split (predictions, or only its count)."""
    ladder = json.loads((folder / "ladder.json").read_text())
    context = ladder["context"]
    if context.get("test_subsampled_from"):
        raise SystemExit(f"{folder}: the ladder scored a subsample of the test split; compare whole splits only")
    baseline = ladder["steps"][0]["candidates"][0]
    if baseline.get("accuracy") is None:
        raise SystemExit(f"{folder}: the ladder's step 1 has no accuracy ({baseline.get('reason')})")
    n = int(baseline["accuracy"]["n"])
    file = folder / BASELINE_PREDICTIONS
    return {
        "teacher": np.load(file)["teacher"] if file.exists() else None,
        "correct": round(baseline["accuracy"]["accuracy"]["estimate"] * n),
        "n_test": n,
        "teacher_sha256": context.get("teacher_sha256"),
        "fingerprint": ladder["fingerprint"],
    }


def compare(runs: dict[str, dict[str, Any]], labels: np.ndarray, confidence: float, seed: int) -> dict[str, Any]:
    """Every model against every other: paired where both have predictions, Newcombe where one has a count."""
    with_predictions = [run for run in runs.values() if run.get("tfidf_logreg") is not None]
    if not with_predictions:
        raise SystemExit("no --run with evaluate's predictions: the reference baselines come from one")
    counts: dict[str, tuple[int, int]] = {}
    predictions: dict[str, np.ndarray] = {}
    for name, run in runs.items():
        if run["teacher"] is not None:
            predictions[f"{name} teacher"] = run["teacher"]
        else:
            counts[f"{name} teacher"] = (run["correct"], run["n_test"])
    predictions["tf-idf + logistic regression"] = with_predictions[0]["tfidf_logreg"]
    predictions["majority class"] = with_predictions[0]["majority"]
    n = len(labels)
    for name, predicted in predictions.items():
        if len(predicted) != n:
            raise SystemExit(f"{name}: {len(predicted)} predictions for {n} test labels: not the same split")
    for name, (_, scored) in counts.items():
        if scored != n:
            raise SystemExit(f"{name}: scored on {scored} examples, the test split has {n}: not the same split")
    counts |= {name: (int(np.sum(predicted == labels)), n) for name, predicted in predictions.items()}
    models = [f"{name} teacher" for name in runs] + ["tf-idf + logistic regression", "majority class"]
    accuracy = {name: wilson_interval(*counts[name], confidence).model_dump() for name in models}
    pairs = []
    for a, b in itertools.combinations(models, 2):
        if a in predictions and b in predictions:
            paired = paired_difference(
                predictions[a] == labels, predictions[b] == labels, confidence=confidence, seed=seed
            )
            row = {"method": "paired bootstrap + exact McNemar", **paired.model_dump()}
            difference = paired.difference
        else:
            difference = unpaired_difference(*counts[a], *counts[b], confidence)
            row = {
                "method": "Newcombe hybrid score (unpaired; conservative on a shared split)",
                "difference": difference.model_dump(),
                "n": n,
            }
        pairs.append(
            {
                "a": a,
                "b": b,
                **row,
                "a_significantly_better": difference.low > 0,
                "b_significantly_better": difference.high < 0,
            }
        )
    return {"accuracy": accuracy, "pairs": pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=[], help="NAME=FOLDER of a pipeline run (repeatable)")
    parser.add_argument("--ladder", action="append", default=[], help="NAME=FOLDER of a challenge ladder's output")
    parser.add_argument("--labels", type=Path, default=Path("data/prepared/test.jsonl"))
    parser.add_argument("--engine", default="torch")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs: dict[str, dict[str, Any]] = {}
    for item in args.run:
        name, _, folder = item.partition("=")
        runs[name] = load_run(Path(folder), args.engine)
    for item in args.ladder:
        name, _, folder = item.partition("=")
        runs[name] = load_ladder(Path(folder))
    labels = test_labels(args.labels)
    result = {
        "benchmark": "teacher_comparison",
        "method": __doc__.strip().splitlines()[0],
        "test_split": {"n": len(labels), "sha256": hashlib.sha256(args.labels.read_bytes()).hexdigest()},
        "runs": {name: run["fingerprint"] for name, run in runs.items()},
        **compare(runs, labels, args.confidence, seed=0),
        "fingerprint": collect("cpu").model_dump(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for pair in result["pairs"]:
        d = pair["difference"]
        print(f"{pair['a']} - {pair['b']}: {d['estimate']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]")


if __name__ == "__main__":
    main()
