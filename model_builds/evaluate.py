"""Stage `evaluate`: test-split quality of every built variant through the serving engines, with intervals, the
paired non-inferiority decision against the baseline, and two reference baselines -> metrics/accuracy.json.

What is evaluated is what is served: each artifact runs in the engine the gateway loads it with
(infopt.engines.factory). A variant with both artifacts is scored on both; its `quality` is the primary
engine's (onnxruntime where shipped, else torch), and its decision compares it with the baseline's
predictions from the same engine on the same examples (infopt/stats.py: paired bootstrap of the loss,
exact McNemar test; within budget only when the loss's upper bound is within evaluate.max_accuracy_loss).

Each engine's cell records where it ran (`execution_device`, and ONNX Runtime's `providers`): on cuda
without onnxruntime-gpu the ONNX graphs are scored on the CPU provider and say so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from infopt.device import onnxruntime_device, resolve_device
from infopt.fingerprint import collect
from infopt.manifest import AccuracyReport, Artifact, Baselines, Decision, VariantBuild
from infopt.params import EvaluateParams, Params, load_params
from infopt.paths import PREDICTIONS, PREPARED_DIR
from infopt.stats import macro_f1_interval, non_inferior, paired_difference, wilson_interval
from model_builds.baselines import majority_label, tfidf_logreg_predictions
from model_builds.data import Example, encode, load_tokenizer, pad_batch, read_labels, read_split
from model_builds.measuring import open_engine, providers_of
from model_builds.variants.record import enabled_builds

METRICS_PATH = Path("metrics/accuracy.json")
BATCH_SIZE = 64
PRIMARY_ORDER = ("onnxruntime", "torch")


def open_scoring_engine(artifact: Artifact, repo_root: Path, device: str) -> tuple[Any, dict[str, Any]]:
    """The artifact's serving engine and where it runs ({execution_device, providers?, note?})."""
    where: dict[str, Any] = {"execution_device": device}
    if artifact.engine == "onnxruntime":
        ort_device, note = onnxruntime_device(device)
        where["execution_device"] = ort_device
        if note:
            where["execution_note"] = note
        device = ort_device
    engine = open_engine(artifact, device, None, repo_root)
    providers = providers_of(engine)
    if providers is not None:
        where["providers"] = providers
    return engine, where


def engine_logits(
    artifact: Artifact, repo_root: Path, device: str, texts: list[str], max_seq_len: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Logits of the artifact's engine over `texts` (tokenized with the artifact's tokenizer), and where it ran."""
    tokenizer = load_tokenizer(repo_root / artifact.path)
    ids = encode(tokenizer, texts, max_seq_len)
    engine, where = open_scoring_engine(artifact, repo_root, device)
    try:
        logits = np.concatenate(
            [
                engine.infer(*pad_batch(ids[i : i + BATCH_SIZE], int(tokenizer.pad_token_id)))
                for i in range(0, len(ids), BATCH_SIZE)
            ]
        )
    finally:
        engine.close()
    if not np.isfinite(logits).all():
        raise ValueError(f"{artifact.path} ({artifact.engine}) produced non-finite logits on the test split")
    return logits, where


def quality(
    predictions: np.ndarray,
    labels: np.ndarray,
    num_labels: int,
    engine: str,
    where: str,
    config: EvaluateParams,
    seed: int,
) -> AccuracyReport:
    correct = int(np.sum(predictions == labels))
    return AccuracyReport(
        engine=engine,
        execution_device=where,
        n=len(labels),
        accuracy=wilson_interval(correct, len(labels), config.confidence),
        macro_f1=macro_f1_interval(
            predictions,
            labels,
            num_labels,
            confidence=config.confidence,
            resamples=config.bootstrap_resamples,
            seed=seed,
        ),
    )


def decide(
    baseline: str,
    engine: str,
    baseline_predictions: np.ndarray,
    predictions: np.ndarray,
    labels: np.ndarray,
    config: EvaluateParams,
    seed: int,
) -> Decision:
    """The paired non-inferiority decision: loss = baseline accuracy - variant accuracy on the same examples."""
    paired = paired_difference(
        baseline_predictions == labels,
        predictions == labels,
        confidence=config.confidence,
        resamples=config.bootstrap_resamples,
        seed=seed,
    )
    return Decision(
        baseline=baseline,
        engine=engine,
        loss=paired.difference,
        mcnemar_p=paired.mcnemar_p,
        baseline_only=paired.a_only,
        variant_only=paired.b_only,
        budget=config.max_accuracy_loss,
        within_budget=non_inferior(paired.difference, config.max_accuracy_loss),
    )


def primary_engine(build: VariantBuild) -> str:
    engines = {a.engine for a in build.artifacts}
    return next(name for name in PRIMARY_ORDER if name in engines)


@dataclass(frozen=True)
class EngineRun:
    logits: np.ndarray
    where: dict[str, Any]

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(-1)


def evaluate_builds(
    builds: list[VariantBuild],
    baseline: str,
    test: list[Example],
    num_labels: int,
    max_seq_len: int,
    config: EvaluateParams,
    engines: list[str],
    repo_root: Path,
    device: str,
    seed: int,
    predictions: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The `variants` section of accuracy.json: every build scored on every engine it ships that is measured.

    `predictions`, when given, receives each "<variant>.<engine>" -> predicted label per test example (for
    paired comparisons across runs, e.g. two teachers on the same test split)."""
    texts = [example.text for example in test]
    labels = np.array([example.label for example in test])
    by_name = {build.name: build for build in builds}
    if baseline not in by_name or by_name[baseline].status != "built":
        built = [b.name for b in builds if b.status == "built"]
        raise ValueError(f"baseline variant {baseline!r} was not built; built: {built}")
    base = by_name[baseline]
    base_runs = {
        a.engine: EngineRun(*engine_logits(a, repo_root, device, texts, max_seq_len))
        for a in base.artifacts
        if a.engine in engines
    }
    if not base_runs:
        raise ValueError(f"baseline {baseline!r} ships no artifact for the measured engines {engines}")
    results: dict[str, Any] = {}
    for build in builds:
        if build.status != "built":
            results[build.name] = {"status": "skipped", "skip_reason": build.skip_reason}
            continue
        cells: dict[str, Any] = {}
        for artifact in build.artifacts:
            if artifact.engine not in engines:
                continue
            run = (
                base_runs[artifact.engine]
                if build.name == baseline
                else EngineRun(*engine_logits(artifact, repo_root, device, texts, max_seq_len))
            )
            reference = base_runs.get(artifact.engine) or next(iter(base_runs.values()))
            report = quality(
                run.predictions, labels, num_labels, artifact.engine, run.where["execution_device"], config, seed
            )
            cell: dict[str, Any] = {"quality": report.model_dump(), **run.where}
            if predictions is not None:
                predictions[f"{build.name}.{artifact.engine}"] = run.predictions.astype(np.int16)
            if build.name != baseline:
                cell["decision"] = decide(
                    baseline, artifact.engine, reference.predictions, run.predictions, labels, config, seed
                ).model_dump()
                cell["agreement_with_baseline"] = float(np.mean(run.predictions == reference.predictions))
                cell["max_abs_logit_diff_vs_baseline"] = float(np.abs(run.logits - reference.logits).max())
            cells[artifact.engine] = cell
        if not cells:
            results[build.name] = {
                "status": "skipped",
                "skip_reason": f"no artifact for the measured engines {engines}",
            }
            continue
        primary = next(name for name in PRIMARY_ORDER if name in cells)
        results[build.name] = {"status": "built", "primary_engine": primary, "engines": cells}
    return results


def reference_baselines(
    train: list[Example],
    test: list[Example],
    labels: list[str],
    config: EvaluateParams,
    seed: int,
    predictions: dict[str, np.ndarray] | None = None,
) -> Baselines:
    """Majority class and TF-IDF + logistic regression, fit on the train split, scored on the test split."""
    train_labels = np.array([e.label for e in train])
    test_labels = np.array([e.label for e in test])
    majority = majority_label(train_labels)
    tfidf = tfidf_logreg_predictions([e.text for e in train], train_labels, [e.text for e in test], seed)
    if predictions is not None:
        predictions["_tfidf_logreg"] = tfidf.astype(np.int16)
        predictions["_majority"] = np.full(len(test_labels), majority, dtype=np.int16)
    n = len(test_labels)
    return Baselines(
        majority=wilson_interval(int(np.sum(test_labels == majority)), n, config.confidence),
        tfidf_logreg=wilson_interval(int(np.sum(tfidf == test_labels)), n, config.confidence),
        majority_label=labels[majority],
    )


def run_evaluate(
    params: Params, root: Path = Path("."), predictions: dict[str, np.ndarray] | None = None
) -> dict[str, Any]:
    device = resolve_device(params.device)
    builds = enabled_builds(params, root)
    labels = read_labels(root / PREPARED_DIR)
    test = read_split(root / PREPARED_DIR, "test")
    variants = evaluate_builds(
        builds,
        params.baseline.name,
        test,
        len(labels),
        params.model.max_seq_len,
        params.evaluate,
        list(params.benchmark.engines),
        root,
        device,
        params.seed,
        predictions,
    )
    baselines = reference_baselines(
        read_split(root / PREPARED_DIR, "train"), test, labels, params.evaluate, params.seed, predictions
    )
    return {
        "baseline": params.baseline.name,
        "max_accuracy_loss": params.evaluate.max_accuracy_loss,
        "confidence": params.evaluate.confidence,
        "decision_rule": "within budget only when the upper bound of the paired loss vs the baseline "
        "(percentile bootstrap over test examples) is <= max_accuracy_loss",
        "n_test": len(test),
        "baselines": baselines.model_dump(),
        "fingerprint": collect(device, repo=root).model_dump(),
        "variants": variants,
    }


def _table(report: dict[str, Any]) -> Table:
    table = Table(
        "variant", "engine", "on", "accuracy (95% CI)", "macro-F1", "loss (upper)", "budget", title="test split"
    )
    for name, row in report["variants"].items():
        if row["status"] != "built":
            table.add_row(name, "-", "", "skipped", "", "", "")
            continue
        for engine, cell in row["engines"].items():
            acc, f1 = cell["quality"]["accuracy"], cell["quality"]["macro_f1"]
            decision = cell.get("decision")
            loss = f"{decision['loss']['estimate']:+.4f} ({decision['loss']['high']:+.4f})" if decision else "baseline"
            verdict = ("ok" if decision["within_budget"] else "over") if decision else ""
            table.add_row(
                name,
                engine,
                cell["execution_device"],
                f"{acc['estimate']:.4f} [{acc['low']:.4f}, {acc['high']:.4f}]",
                f"{f1['estimate']:.3f}",
                loss,
                verdict,
            )
    base = report["baselines"]
    table.caption = (
        f"majority ({base['majority_label']}) {base['majority']['estimate']:.4f}; "
        f"TF-IDF + logistic regression {base['tfidf_logreg']['estimate']:.4f}; n = {report['n_test']}"
    )
    return table


def main() -> None:
    from infopt.tracking import log_stage

    params = load_params("params.yaml")
    predictions: dict[str, np.ndarray] = {}
    report = run_evaluate(params, predictions=predictions)
    METRICS_PATH.parent.mkdir(parents=True, exist_ok=True)
    METRICS_PATH.write_text(json.dumps(report, indent=2) + "\n")
    PREDICTIONS.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(PREDICTIONS, **predictions)
    Console(width=120).print(_table(report))
    for name, row in report["variants"].items():  # the primary engine's unprefixed numbers are logged by `manifest`
        for engine, cell in row.get("engines", {}).items():
            flat = {
                "accuracy": cell["quality"]["accuracy"]["estimate"],
                "macro_f1": cell["quality"]["macro_f1"]["estimate"],
            }
            if "decision" in cell:
                flat["accuracy_loss_ci_high"] = cell["decision"]["loss"]["high"]
            log_stage(params, name, "evaluate", flat, prefix=f"{engine}_")


if __name__ == "__main__":
    main()
