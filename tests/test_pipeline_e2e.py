"""The real DVC pipeline, end to end, on a shrunken params.yaml in a fresh git copy of the repository.

prepare -> train -> variants -> evaluate -> benchmark -> profile -> manifest with `dvc repro`, a real
MLflow sqlite store, then a second `dvc repro` that must be a quick no-op.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from infopt.hashing import tree_sha256
from infopt.manifest import Fingerprint, load_manifest
from tests.pipeline_workspace import run as _run

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ["fp32", "int8-dynamic", "distilled"]
LLM_VARIANTS = ["llm-fp32", "llm-bf16", "llm-int8", "llm-distilled"]

pytestmark = pytest.mark.slow  # the `pipeline` fixture (tests/conftest.py) runs the shrunk `dvc repro` once


def test_manifest_lists_variants_with_matching_artifacts(pipeline: tuple[Path, dict[str, str], float]) -> None:
    root, _, _ = pipeline
    manifest = load_manifest(root / "artifacts/manifest.json")
    assert [entry.name for entry in manifest.variants] == VARIANTS
    assert manifest.labels == ["adj.pert", "noun.food", "verb.motion"]
    assert manifest.baselines.majority.low <= manifest.baselines.majority.estimate <= manifest.baselines.majority.high
    for entry in manifest.variants:
        assert entry.status == "built" and entry.artifacts, entry.name
        for artifact in entry.artifacts:
            assert tree_sha256(root / artifact.path) == artifact.sha256, artifact.path
        assert entry.quality is not None and entry.mlflow_run_id
        assert (entry.decision is None) == (entry.name == "fp32")
        assert {p.batch_size for sweep in entry.sweeps for p in sweep.points} == {1, 4}
        assert {s.threads for s in entry.sweeps} == {1}
        assert entry.profile and (root / entry.profile).is_file()
    assert manifest.variant("int8-dynamic").artifact("onnxruntime").precision == "int8"
    # the causal-LM path ran in the same `dvc repro`: its variants are in the manifest's llm section
    assert manifest.llm is not None
    assert [entry.name for entry in manifest.llm.variants] == LLM_VARIANTS
    for entry in manifest.llm.variants:
        assert entry.quality is not None and tree_sha256(root / entry.artifacts[0].path) == entry.artifacts[0].sha256
    assert manifest.llm.variant("llm-int8").precision == "int8"


def test_metrics_files_carry_fingerprint_and_dvc_reads_them(pipeline: tuple[Path, dict[str, str], float]) -> None:
    root, env, _ = pipeline
    for name in (
        "metrics/train.json",
        "metrics/accuracy.json",
        "metrics/benchmark.json",
        "plots/latency_vs_batch.json",
        "plots/pareto.json",
    ):
        data = json.loads((root / name).read_text())
        Fingerprint.model_validate(data["fingerprint"])
    table = _run(["dvc", "metrics", "show"], root, env, 60).stdout
    lines = [line for line in table.splitlines() if line.strip()]
    rows = len(VARIANTS) + len(LLM_VARIANTS)
    assert len(lines) == 1 + rows and max(map(len, lines)) <= 120, table  # one row per variant, 120 columns
    assert "metrics/summary/int8-dynamic.json" in table and "loss_high" in lines[0]
    plots = json.loads(_run(["dvc", "plots", "show", "--json"], root, env, 60).stdout)
    assert {"plots/latency_vs_batch.json", "plots/pareto.json"} <= set(plots["data"])
    rows = plots["data"]["plots/latency_vs_batch.json"][0]["content"]["data"]["values"]
    assert {row["batch_size"] for row in rows} == {1, 4}


def test_mlflow_has_one_run_per_variant(pipeline: tuple[Path, dict[str, str], float]) -> None:
    root, _, _ = pipeline
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["infopt"], output_format="list")
    by_variant: dict[str, list] = {}
    for run in runs:
        by_variant.setdefault(run.data.tags["infopt.variant"], []).append(run)
    assert sorted(by_variant) == sorted(VARIANTS + LLM_VARIANTS)
    assert {run.data.tags.get("infopt.model_kind") for name in LLM_VARIANTS for run in by_variant[name]} == {
        "causal-lm"
    }
    assert all(len(found) == 1 for found in by_variant.values())
    metrics = by_variant["int8-dynamic"][0].data.metrics
    for name in (
        "batch_1_latency_p99_ms",
        "batch_4_throughput_req_sec",
        "batch_1_cost_usd",
        "accuracy",
        "int8_accuracy_loss",
    ):
        assert name in metrics, name
    assert "torch_1t_batch_1_latency_p99_ms" in by_variant["fp32"][0].data.metrics  # <engine>_<threads>t_...


def test_second_repro_is_a_quick_noop(pipeline: tuple[Path, dict[str, str], float]) -> None:
    root, env, first_seconds = pipeline
    result = _run(["dvc", "repro"], root, env, 120)  # bounded against a hang; its speed is not the test
    assert "Data and pipelines are up to date" in result.stdout + result.stderr
    print(f"first dvc repro {first_seconds:.1f}s")
