"""Stage `manifest`: join builds, accuracy, benchmark, SLA knees, profiles and MLflow runs into
artifacts/manifest.json (validated by infopt.manifest.Manifest), plus metrics/summary/<variant>.json and the
accuracy-vs-cost Pareto plot (plots/pareto.{json,png}).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infopt.hashing import tree_sha256
from infopt.manifest import (
    AccuracyReport,
    Baselines,
    Decision,
    Fingerprint,
    Manifest,
    Sweep,
    VariantBuild,
    VariantEntry,
)
from infopt.params import Params, load_params
from infopt.paths import MANIFEST_JSON, PREPARED_DIR, PROFILES_DIR
from model_builds.benchmark import BENCHMARK_JSON, sweeps_of
from model_builds.llm.record import llm_manifest
from model_builds.measuring import read_json, write_json
from model_builds.summary import pareto_rows, summary_metrics, summary_rows
from model_builds.variants.record import enabled_builds

ACCURACY_JSON = Path("metrics/accuracy.json")
SUMMARY_DIR = Path("metrics/summary")  # one small DVC metrics file per variant
PARETO_JSON = Path("plots/pareto.json")
PARETO_PNG = Path("plots/pareto.png")


class ManifestStageError(ValueError):
    """An input of the manifest is missing or inconsistent; the message names the variant and file."""


def _labels(root: Path) -> list[str]:
    raw = read_json(root / PREPARED_DIR / "labels.json", "prepare")
    labels = raw.get("labels") if isinstance(raw, dict) else raw
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ManifestStageError(f"{root / PREPARED_DIR / 'labels.json'}: expected a list of label names")
    return labels


def _verify_artifacts(build: VariantBuild, root: Path) -> None:
    for artifact in build.artifacts:
        path = root / artifact.path
        if not path.exists():
            raise ManifestStageError(f"variant {build.name!r}: artifact {artifact.path} does not exist")
        actual = tree_sha256(path)
        if actual != artifact.sha256:
            raise ManifestStageError(
                f"variant {build.name!r}: {artifact.path} has sha256 {actual}, variant.json records "
                f"{artifact.sha256}; re-run the variants stage"
            )


def _quality(build: VariantBuild, accuracy: Mapping[str, Any]) -> dict[str, Any]:
    """quality, quality_by_engine and decision of a built variant, from metrics/accuracy.json."""
    entry = accuracy.get("variants", {}).get(build.name)
    if build.status != "built":
        return {}
    if entry is None or entry.get("status") != "built":
        raise ManifestStageError(
            f"variant {build.name!r} is built but {ACCURACY_JSON} has no quality for it "
            f"(has {sorted(accuracy.get('variants', {}))}); re-run the evaluate stage"
        )
    cells = entry["engines"]
    primary = cells[entry["primary_engine"]]
    return {
        "quality": AccuracyReport.model_validate(primary["quality"]),
        "quality_by_engine": {engine: AccuracyReport.model_validate(cell["quality"]) for engine, cell in cells.items()},
        "decision": Decision.model_validate(primary["decision"]) if "decision" in primary else None,
    }


def variant_entry(
    build: VariantBuild, accuracy: Mapping[str, Any], report: Mapping[str, Any], root: Path, run_id: str | None
) -> VariantEntry:
    sweeps: list[Sweep] = []
    profile: str | None = None
    details = dict(build.details)
    if build.status == "built":
        if build.name not in report["variants"]:
            raise ManifestStageError(f"variant {build.name!r} is built but {BENCHMARK_JSON} has no sweep for it")
        sweeps = sweeps_of(dict(report), build.name)
        # An engine the benchmark could not time on this device (ONNX Runtime without a CUDA provider on a
        # GPU run) has no sweep; the reason travels with the variant instead.
        for engine, reason in report["variants"][build.name].get("engines_skipped", {}).items():
            details[f"benchmark_skipped.{engine}"] = reason
        profile_path = PROFILES_DIR / f"{build.name}.json"
        if not (root / profile_path).is_file():
            raise ManifestStageError(f"variant {build.name!r}: {profile_path} not found; run the profile stage")
        profile = profile_path.as_posix()
    _verify_artifacts(build, root)
    return VariantEntry(
        **build.model_dump(exclude={"details"}),
        **_quality(build, accuracy),
        sweeps=sweeps,
        profile=profile,
        details=details,
        mlflow_run_id=run_id,
    )


def build_manifest(params: Params, root: Path = Path("."), run_ids: Mapping[str, str] | None = None) -> Manifest:
    """The validated manifest of this workspace; raises ManifestStageError naming what is missing."""
    run_ids = run_ids or {}
    accuracy = read_json(root / ACCURACY_JSON, "evaluate")
    report = read_json(root / BENCHMARK_JSON, "benchmark")
    entries = [
        variant_entry(build, accuracy, report, root, run_ids.get(build.name)) for build in enabled_builds(params, root)
    ]
    return Manifest(
        model_name=params.model.name,
        labels=_labels(root),
        max_seq_len=params.model.max_seq_len,
        device=report["device"],
        baseline=params.baseline.name,
        max_accuracy_loss=params.evaluate.max_accuracy_loss,
        baselines=Baselines.model_validate(accuracy["baselines"]),
        fingerprint=Fingerprint.model_validate(report["fingerprint"]),
        variants=entries,
        llm=llm_manifest(params, root),  # None unless params enables the causal-LM path
    )


def log_runs(params: Params, manifest: Manifest, root: Path = Path(".")) -> dict[str, str]:
    """Log each variant's params, accuracy, model and fingerprint into its run; returns variant -> run id."""
    import mlflow

    from infopt.tracking import log_accuracy, log_fingerprint, log_model, log_variant_params, variant_run

    run_ids: dict[str, str] = {}
    for entry in manifest.variants:
        with variant_run(params, entry.name, stage="manifest") as run:
            run_ids[entry.name] = run.info.run_id
            log_variant_params(params, entry.name)
            log_fingerprint(manifest.fingerprint)
            mlflow.set_tag("infopt.status", entry.status)
            if entry.skip_reason:
                mlflow.set_tag("infopt.skip_reason", entry.skip_reason)
            if entry.quality is not None:
                log_accuracy(entry.kind, entry.quality, entry.decision)
            for artifact in entry.artifacts:
                log_model(artifact, root)
    return run_ids


def main() -> None:
    from rich.console import Console

    from infopt.tracking import tracking_enabled
    from model_builds.plots import footer, pareto_plot

    params = load_params("params.yaml")
    manifest = build_manifest(params)  # validates every input before anything is logged
    began = time.perf_counter()
    if tracking_enabled():
        run_ids = log_runs(params, manifest)
        logged = f"MLflow logging (params, accuracy, models) {time.perf_counter() - began:.1f}s"
        manifest = build_manifest(params, run_ids=run_ids)
    else:
        logged = "MLflow logging off (INFOPT_TRACKING): no mlflow_run_id in the manifest"
    write_json(MANIFEST_JSON, manifest.model_dump(mode="json"))
    rows = summary_rows(manifest)
    fingerprint = manifest.fingerprint.model_dump()
    if SUMMARY_DIR.exists():
        shutil.rmtree(SUMMARY_DIR)
    for row in rows:
        write_json(
            SUMMARY_DIR / f"{row.variant}.json", summary_metrics(row, manifest.device, manifest.fingerprint.git_sha)
        )
    pareto = pareto_rows(rows)
    write_json(PARETO_JSON, {"pareto": pareto, "fingerprint": fingerprint})
    pareto_plot(
        pareto, PARETO_PNG, title=f"accuracy vs cost per 1k requests ({manifest.device})", note=footer(fingerprint)
    )
    Console().print(f"[bold]manifest[/]: {len(manifest.variants)} variants -> {MANIFEST_JSON}; {logged}")


if __name__ == "__main__":
    main()
