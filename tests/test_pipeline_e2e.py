"""The real DVC pipeline, end to end, on a shrunken params.yaml in a fresh git copy of the repository.

prepare -> train -> variants -> evaluate -> benchmark -> profile -> manifest with `dvc repro`, a real
MLflow sqlite store, then a second `dvc repro` that must be a quick no-op.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from ruamel.yaml import YAML

from infopt.hashing import tree_sha256
from infopt.manifest import Fingerprint, load_manifest

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ["fp32", "int8-dynamic", "distilled"]
LLM_VARIANTS = ["llm-fp32", "llm-bf16", "llm-int8", "llm-distilled"]

pytestmark = pytest.mark.slow


def _copy_tracked(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _shrink_params(path: Path) -> None:
    yaml = YAML()
    raw = yaml.load(path.read_text())
    raw["device"] = "cpu"
    raw["data"].update(
        {
            "categories": ["noun.food", "verb.motion", "adj.pert"],
            "max_per_class": 80,
            "val_fraction": 0.1,
            "max_train": 150,
        }
    )
    raw["model"]["max_seq_len"] = 32
    raw["model"]["vocab_size"] = 1000
    raw["train"].update({"epochs": 1, "require_beats_majority": False})  # 1 epoch on 150 texts: no gate
    raw["variants"] = [
        {"name": "fp32", "kind": "baseline"},
        {"name": "int8-dynamic", "kind": "int8_onnx", "calibration": "dynamic", "per_channel": True},
        {
            "name": "distilled",
            "kind": "distilled",
            "epochs": 1,
            "student": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
        },
    ]
    raw["benchmark"].update(
        {
            "batch_sizes": [1, 4],
            "threads": [1],
            "repeats": 2,
            "min_iters": 5,
            "min_seconds": 0.05,
            "max_seconds": 1.0,
            "warmup_iters": 1,
        }
    )
    raw["evaluate"]["bootstrap_resamples"] = 200
    raw["profile"].update({"batch_size": 4, "iters": 2, "top_k": 5})
    llm = raw["llm"]
    llm.update({"vocab_size": 400, "max_seq_len": 32})
    llm["presets"]["tiny"] = {
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 1,
    }  # fmt: skip
    llm["data"]["max_documents"] = 300
    llm["train"].update({"steps": 10, "warmup_steps": 2})
    llm["variants"][-1].update({"steps": 5})
    llm["variants"][-1]["student"].update({"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 1})
    llm["evaluate"].update({"max_documents": 40, "bootstrap_resamples": 200})
    llm["benchmark"].update({"batch_sizes": [1], "prompt_tokens": 8, "output_tokens": 4, "min_iters": 2})
    with path.open("w") as handle:
        yaml.dump(raw, handle)


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], float]:
    root = tmp_path_factory.mktemp("e2e")
    _copy_tracked(root)
    _shrink_params(root / "params.yaml")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(root),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "DVC_NO_ANALYTICS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "GIT_AUTHOR_NAME": "e2e",
        "GIT_AUTHOR_EMAIL": "e2e@example.invalid",
        "GIT_COMMITTER_NAME": "e2e",
        "GIT_COMMITTER_EMAIL": "e2e@example.invalid",
    }
    env.pop("INFOPT_GIT_SHA", None)
    _run(["git", "init", "-q"], root, env, 30)
    _run(["git", "add", "-A"], root, env, 30)
    _run(["git", "commit", "-q", "-m", "e2e copy"], root, env, 30)
    begin = time.monotonic()
    _run(["dvc", "repro"], root, env, 900)  # a bound against hangs; the shrunk run takes a few minutes
    return root, env, time.monotonic() - begin


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
    assert len(lines) == 1 + len(VARIANTS) and max(map(len, lines)) <= 120, table  # one row per variant, 120 cols
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
    assert "torch_batch_1_latency_p99_ms" in by_variant["fp32"][0].data.metrics


def test_second_repro_is_a_quick_noop(pipeline: tuple[Path, dict[str, str], float]) -> None:
    root, env, first_seconds = pipeline
    begin = time.monotonic()
    result = _run(["dvc", "repro"], root, env, 120)
    elapsed = time.monotonic() - begin
    assert "Data and pipelines are up to date" in result.stdout + result.stderr
    assert elapsed < 30, elapsed
    print(f"first dvc repro {first_seconds:.1f}s, no-op {elapsed:.1f}s")
