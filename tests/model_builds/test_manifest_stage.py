"""Manifest stage: joins builds, accuracy, benchmark, profiles and MLflow runs into a valid manifest."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from infopt.hashing import tree_sha256
from infopt.manifest import load_manifest
from infopt.params import load_params
from model_builds import benchmark, manifest
from model_builds.profile import run_profiles
from tests.model_builds.tiny_build import build_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build_workspace(tmp_path_factory.mktemp("manifest"))
    params = load_params(root / "params.yaml")
    (root / "metrics/benchmark.json").write_text(json.dumps(benchmark.run_benchmark(params, root)))
    run_profiles(params, root)
    return root


def test_main_writes_valid_manifest_summary_and_pareto(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workspace / 'mlflow.db'}")
    manifest.main()
    loaded = load_manifest(workspace / "artifacts/manifest.json")
    assert [entry.name for entry in loaded.variants] == ["fp32", "int8-dynamic", "fp8"]
    assert loaded.labels == ["computers", "science"] and loaded.baseline == "fp32"
    fp32 = loaded.variant("fp32")
    assert {(s.engine, s.threads) for s in fp32.sweeps} == {
        ("torch", 1),
        ("torch", 2),
        ("onnxruntime", 1),
        ("onnxruntime", 2),
    }
    assert fp32.profile == "metrics/profiles/fp32.json" and fp32.quality and fp32.quality.accuracy.estimate == 0.5
    assert fp32.decision is None and fp32.deployable  # the baseline is not compared with itself
    int8 = loaded.variant("int8-dynamic")
    assert int8.decision and not int8.decision.within_budget and not int8.deployable  # loss upper bound 0.08 > 0.02
    assert loaded.baselines.majority_label == "computers"
    for entry in loaded.variants:
        for artifact in entry.artifacts:
            assert tree_sha256(workspace / artifact.path) == artifact.sha256
    skipped = loaded.variant("fp8")
    assert skipped.status == "skipped" and skipped.sweeps == [] and skipped.quality is None
    run_ids = {entry.name: entry.mlflow_run_id for entry in loaded.variants}
    assert all(run_ids.values()) and len(set(run_ids.values())) == 3
    run = mlflow.get_run(run_ids["int8-dynamic"])
    assert run.data.metrics["int8_accuracy_loss"] == 0.0
    assert run.data.tags["infopt.model_sha256.onnxruntime"] == loaded.variant("int8-dynamic").artifacts[0].sha256

    summary = {path.stem: json.loads(path.read_text()) for path in (workspace / "metrics/summary").glob("*.json")}
    assert set(summary) == {"fp32", "int8-dynamic", "fp8"}
    assert summary["int8-dynamic"]["accuracy"] == 0.5 and summary["int8-dynamic"]["req_per_s"] > 0
    assert summary["int8-dynamic"]["ok"] is False and summary["int8-dynamic"]["loss_high"] == 0.08
    assert "ok" not in summary["fp32"] and "p99_ms_16" not in summary["fp32"]  # no batch 16 in this sweep
    assert summary["fp8"] == {"device": "cpu", "git_sha": loaded.fingerprint.git_sha[:8]}
    pareto = json.loads((workspace / "plots/pareto.json").read_text())
    assert {row["variant"] for row in pareto["pareto"]} == {"fp32", "int8-dynamic"}
    assert any(row["on_front"] for row in pareto["pareto"])
    assert (workspace / "plots/pareto.png").stat().st_size > 1000


def test_missing_accuracy_entry_names_the_variant(workspace: Path, tmp_path: Path) -> None:
    accuracy = json.loads((workspace / "metrics/accuracy.json").read_text())
    del accuracy["variants"]["int8-dynamic"]
    original = (workspace / "metrics/accuracy.json").read_text()
    (workspace / "metrics/accuracy.json").write_text(json.dumps(accuracy))
    try:
        with pytest.raises(
            manifest.ManifestStageError, match=r"'int8-dynamic' is built but metrics/accuracy\.json has no quality"
        ):
            manifest.build_manifest(load_params(workspace / "params.yaml"), workspace)
    finally:
        (workspace / "metrics/accuracy.json").write_text(original)


def test_tampered_artifact_is_refused(workspace: Path) -> None:
    record_path = workspace / "artifacts/variants/int8-dynamic/variant.json"
    original = record_path.read_text()
    record = json.loads(original)
    record["artifacts"][0]["sha256"] = "0" * 64
    record_path.write_text(json.dumps(record))
    try:
        with pytest.raises(manifest.ManifestStageError, match=r"int8-dynamic.*re-run the variants stage"):
            manifest.build_manifest(load_params(workspace / "params.yaml"), workspace)
    finally:
        record_path.write_text(original)


def test_summary_command_prints_table_and_json(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from cli.pipeline import app

    monkeypatch.chdir(workspace)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workspace / 'mlflow.db'}")
    if not (workspace / "artifacts/manifest.json").is_file():
        manifest.main()
    table = CliRunner().invoke(app, ["summary"])
    assert table.exit_code == 0, table.output
    assert "int8-dynamic" in table.output and "p99@16 ms" in table.output and "skipped" in table.output
    assert "TF-IDF" in table.output and "over" in table.output  # the decision, not a point estimate
    as_json = CliRunner().invoke(app, ["summary", "--json"])
    rows = {row["variant"]: row for row in json.loads(as_json.output)["variants"]}
    assert rows["fp8"]["status"] == "skipped" and rows["int8-dynamic"]["best_throughput_rps"] > 0
    missing = CliRunner().invoke(app, ["summary", "--manifest", "nope.json"])
    assert missing.exit_code == 1 and "not found" in missing.output


def test_engine_the_benchmark_could_not_time_leaves_a_reason_not_a_sweep(workspace: Path) -> None:
    """A GPU run without onnxruntime-gpu: the ONNX-only variant is built and scored, its latency not timed."""
    from model_builds.variants.record import enabled_builds

    params = load_params(workspace / "params.yaml")
    accuracy = json.loads((workspace / "metrics/accuracy.json").read_text())
    report = json.loads((workspace / "metrics/benchmark.json").read_text())
    reason = "device is cuda but onnxruntime has only ['CPUExecutionProvider'] (no CUDAExecutionProvider)"
    report["variants"]["int8-dynamic"] = {"status": "built", "sweeps": [], "engines_skipped": {"onnxruntime": reason}}
    build = next(b for b in enabled_builds(params, workspace) if b.name == "int8-dynamic")
    entry = manifest.variant_entry(build, accuracy, report, workspace, None)
    assert entry.status == "built" and entry.sweeps == []
    assert (
        entry.details["benchmark_skipped.onnxruntime"] == reason
        and entry.quality
        and entry.quality.accuracy.estimate == 0.5
    )
