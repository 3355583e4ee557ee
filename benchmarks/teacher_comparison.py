"""Paired comparison of teachers (and the reference baselines) on the same test split, across pipeline runs.

    python -m benchmarks.teacher_comparison --run bert-base=RUN_A --run tiny=RUN_B --out RESULT.json

Each RUN folder holds what a pipeline run wrote: artifacts/predictions.npz (evaluate: the predicted label of
every test example per "<variant>.<engine>", plus "_tfidf_logreg" and "_majority") and metrics/accuracy.json
(its fingerprint). The runs must share the test split (same data, seed and fractions: `data.max_train` only
subsamples train). Every pair is a paired bootstrap of the accuracy difference with McNemar's exact test
(infopt/stats.py): "A beats B" only when the lower bound of A - B is above zero.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from infopt.fingerprint import collect
from infopt.stats import paired_difference, wilson_interval


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


def compare(runs: dict[str, dict[str, Any]], labels: np.ndarray, confidence: float, seed: int) -> dict[str, Any]:
    models = {f"{name} teacher": run["teacher"] for name, run in runs.items()}
    first = next(iter(runs.values()))
    models["tf-idf + logistic regression"] = first["tfidf_logreg"]
    models["majority class"] = first["majority"]
    for name, predictions in models.items():
        if len(predictions) != len(labels):
            raise SystemExit(
                f"{name}: {len(predictions)} predictions for {len(labels)} test labels: not the same split"
            )
    accuracy = {
        name: wilson_interval(int(np.sum(p == labels)), len(labels), confidence).model_dump()
        for name, p in models.items()
    }
    pairs = []
    for a, b in itertools.permutations(models, 2):
        if list(models).index(a) > list(models).index(b):
            continue
        paired = paired_difference(models[a] == labels, models[b] == labels, confidence=confidence, seed=seed)
        pairs.append(
            {
                "a": a,
                "b": b,
                **paired.model_dump(),
                "a_significantly_better": paired.difference.low > 0,
                "b_significantly_better": paired.difference.high < 0,
            }
        )
    return {"accuracy": accuracy, "pairs": pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="NAME=FOLDER of a pipeline run (repeatable)")
    parser.add_argument("--labels", type=Path, default=Path("data/prepared/test.jsonl"))
    parser.add_argument("--engine", default="torch")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = {}
    for item in args.run:
        name, _, folder = item.partition("=")
        runs[name] = load_run(Path(folder), args.engine)
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
