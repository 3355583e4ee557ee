"""Stage 4: test-split accuracy of every built variant through the serving engines -> metrics/accuracy.json.

What is evaluated is what is served: hf/ artifacts run in infopt.engines.torch_engine.TorchEngine, onnx/
artifacts in infopt.engines.onnxruntime_engine.OnnxRuntimeEngine (fp8 folders in the builder's
Fp8Engine, the same contract). A variant with both artifacts is scored on both; its top-level numbers
come from the primary engine (onnxruntime if present, else torch).

Each engine's cell records where it ran (`execution_device`, and ONNX Runtime's `providers`): on cuda
without onnxruntime-gpu the ONNX graphs are scored on the CPU provider and say so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from infopt.device import onnxruntime_device, resolve_device
from infopt.fingerprint import collect
from infopt.manifest import Artifact, VariantBuild
from infopt.params import load_params
from infopt.paths import PREPARED_DIR
from model_builds.data import Example, encode, load_tokenizer, pad_batch, read_labels, read_split
from model_builds.measuring import open_engine, providers_of
from model_builds.modeling import accuracy, macro_f1
from model_builds.variants.record import enabled_builds

METRICS_PATH = Path("metrics/accuracy.json")
BATCH_SIZE = 32
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
    return logits, where


def score(
    logits: np.ndarray,
    labels: np.ndarray,
    num_labels: int,
    baseline_accuracy: float,
    baseline_logits: np.ndarray,
    max_accuracy_loss: float,
    engine: str,
) -> dict:
    """Accuracy, macro-F1 and the comparison with the baseline's logits on the same examples."""
    predictions = logits.argmax(-1)
    value = accuracy(predictions, labels)
    loss = baseline_accuracy - value
    return {
        "accuracy": value,
        "macro_f1": macro_f1(predictions, labels, num_labels),
        "accuracy_loss": loss,
        "within_accuracy_budget": bool(loss <= max_accuracy_loss + 1e-12),
        "engine": engine,
        "n_test": len(labels),
        "agreement_with_baseline": float(np.mean(predictions == baseline_logits.argmax(-1))),
        "max_abs_logit_diff_vs_baseline": float(np.abs(logits - baseline_logits).max()),
    }


def _primary(build: VariantBuild) -> str:
    engines = {a.engine for a in build.artifacts}
    return next(name for name in PRIMARY_ORDER if name in engines)


def evaluate_builds(
    builds: list[VariantBuild],
    baseline: str,
    test: list[Example],
    num_labels: int,
    max_seq_len: int,
    max_accuracy_loss: float,
    repo_root: Path,
    device: str,
) -> dict:
    """The `variants` section of accuracy.json: every build scored on every engine it ships."""
    texts = [example.text for example in test]
    labels = np.array([example.label for example in test])
    by_name = {build.name: build for build in builds}
    if baseline not in by_name or by_name[baseline].status != "built":
        raise ValueError(
            f"baseline variant {baseline!r} was not built; built: {[b.name for b in builds if b.status == 'built']}"
        )
    base = by_name[baseline]
    base_runs = {a.engine: engine_logits(a, repo_root, device, texts, max_seq_len) for a in base.artifacts}
    base_logits = {engine: logits for engine, (logits, _) in base_runs.items()}
    base_primary = _primary(base)
    base_accuracy = {engine: accuracy(logits.argmax(-1), labels) for engine, logits in base_logits.items()}
    results: dict[str, dict] = {}
    for build in builds:
        if build.status != "built":
            results[build.name] = {
                "status": "skipped",
                "skip_reason": build.skip_reason,
                "accuracy": None,
                "macro_f1": None,
                "accuracy_loss": None,
                "within_accuracy_budget": None,
                "engine": None,
                "n_test": None,
                "agreement_with_baseline": None,
                "max_abs_logit_diff_vs_baseline": None,
            }
            continue
        engines = {}
        for artifact in build.artifacts:
            reference = artifact.engine if artifact.engine in base_logits else base_primary
            logits, where = (
                base_runs[artifact.engine]
                if build.name == baseline
                else engine_logits(artifact, repo_root, device, texts, max_seq_len)
            )
            engines[artifact.engine] = {
                **score(
                    logits,
                    labels,
                    num_labels,
                    base_accuracy[reference],
                    base_logits[reference],
                    max_accuracy_loss,
                    artifact.engine,
                ),
                **where,
            }
        primary = _primary(build)
        results[build.name] = {"status": "built", **engines[primary], "engines": engines}
    return results


def main() -> None:
    params = load_params("params.yaml")
    device = resolve_device(params.device)
    builds = enabled_builds(params)
    labels = read_labels(PREPARED_DIR)
    variants = evaluate_builds(
        builds,
        params.baseline.name,
        read_split(PREPARED_DIR, "test"),
        len(labels),
        params.model.max_seq_len,
        params.evaluate.max_accuracy_loss,
        Path.cwd(),
        device,
    )
    report = {
        "baseline": params.baseline.name,
        "max_accuracy_loss": params.evaluate.max_accuracy_loss,
        "fingerprint": collect(device).model_dump(),
        "variants": variants,
    }
    METRICS_PATH.parent.mkdir(parents=True, exist_ok=True)
    METRICS_PATH.write_text(json.dumps(report, indent=2) + "\n")
    table = Table(
        "variant", "engine", "on", "accuracy", "macro-F1", "loss", "budget", "agree", "max|dlogit|", title="test split"
    )
    for name, row in variants.items():
        if row["status"] != "built":
            table.add_row(name, "-", "", "skipped", "", "", "", "", "")
            continue
        for engine, cell in row["engines"].items():
            table.add_row(
                name,
                engine,
                cell["execution_device"],
                f"{cell['accuracy']:.3f}",
                f"{cell['macro_f1']:.3f}",
                f"{cell['accuracy_loss']:+.3f}",
                "ok" if cell["within_accuracy_budget"] else "over",
                f"{cell['agreement_with_baseline']:.3f}",
                f"{cell['max_abs_logit_diff_vs_baseline']:.3g}",
            )
    Console(width=140).print(table)
    from infopt.tracking import log_stage

    for name, row in variants.items():  # the primary engine's unprefixed numbers are logged by `manifest`
        for engine, cell in row.get("engines", {}).items():
            log_stage(params, name, "evaluate", cell, prefix=f"{engine}_")


if __name__ == "__main__":
    main()
