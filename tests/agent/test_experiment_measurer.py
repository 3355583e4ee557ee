"""The batch node's DVC-experiment measurer on a real, tiny DVC repository whose `benchmark` stage writes
metrics/benchmark.json in the pipeline's format (values computed from the params, so the answer is known)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.experiments import ExperimentError, ExperimentRunner
from agent.measure import ExperimentMeasurer

PARAMS = """\
# benchmark.variants is left unset, as in the project's params.yaml
benchmark:
  batch_sizes: [1, 8, 32]
  engines: [torch, onnxruntime]
  threads: [1, 2]
"""
STAGE = """\
import json
from pathlib import Path

from ruamel.yaml import YAML

config = YAML(typ="safe").load(open("params.yaml"))["benchmark"]
variants = [v for v in config.get("variants") or ["fp32", "int8"] if v in ("fp32", "int8")]  # the built ones
def point(b, threads):
    rps = 100.0 * b * threads
    return {"batch_size": b, "throughput_rps": rps, "throughput_rps_min": rps, "throughput_rps_max": rps,
            "latency_p50_ms": 1.0 * b, "latency_p95_ms": 1.5 * b, "latency_p99_ms": 2.0 * b,
            "latency_p99_ms_min": 2.0 * b, "latency_p99_ms_max": 2.5 * b, "mean_tokens": 20.0,
            "peak_memory_mb": 0.0, "cost_per_1k_usd": 1e-5 / b, "iterations": 30, "rounds": 3}
report = {"variants": {v: {"status": "built", "sweeps": [
    {"engine": e, "threads": t, "device": "cpu", "points": [point(b, t) for b in config["batch_sizes"]]}
    for e in config["engines"] for t in config["threads"]]} for v in variants}}
Path("metrics").mkdir(exist_ok=True)
Path("metrics/benchmark.json").write_text(json.dumps(report))
"""
DVC_YAML = f"""\
stages:
  benchmark:
    cmd: {sys.executable} bench.py
    deps:
      - bench.py
    params:
      - benchmark
    outs:
      - metrics/benchmark.json:
          cache: false
"""


def run(repo: Path, *args: str) -> None:
    subprocess.run(args, cwd=repo, check=True, capture_output=True, text=True)


@pytest.fixture
def bench_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "project"
    repo.mkdir()
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "git", "config", "user.name", "Test User")
    run(repo, "git", "config", "user.email", "test@example.invalid")
    run(repo, "dvc", "init", "-q")
    run(repo, "dvc", "config", "core.analytics", "false")
    run(repo, "dvc", "config", "core.check_update", "false")
    run(repo, "dvc", "config", "--local", "core.site_cache_dir", str(tmp_path / "dvc-site"))
    (repo / "params.yaml").write_text(PARAMS)
    (repo / "bench.py").write_text(STAGE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    run(repo, "dvc", "repro", "-q")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "baseline")
    return repo


def test_a_missing_batch_size_is_one_narrowed_benchmark_experiment(bench_repo: Path) -> None:
    runner = ExperimentRunner(bench_repo)
    measurer = ExperimentMeasurer(runner)
    changes = measurer.changes("int8", "onnxruntime", 2, 12)
    # benchmark.variants is absent from params.yaml: Hydra's ++ adds it in the experiment's copy
    assert runner.set_args(changes) == [
        "-S",
        "params.yaml:++benchmark.variants=[int8]",
        "-S",
        "params.yaml:benchmark.engines=[onnxruntime]",
        "-S",
        "params.yaml:benchmark.threads=[2]",
        "-S",
        "params.yaml:benchmark.batch_sizes=[12]",
    ]
    point = measurer.measure_cell("int8", "onnxruntime", 2)(12)
    assert (point.batch_size, point.throughput_rps, point.latency_p99_ms_max) == (12, 2400.0, 30.0)
    result = measurer.results[("int8", "onnxruntime", 2, 12)]
    narrowed = runner.read(result, "metrics/benchmark.json")
    assert '"fp32"' not in narrowed and '"batch_size": 1,' not in narrowed  # one variant, one batch size
    assert result.params["params.yaml"]["benchmark"]["variants"] == ["int8"]
    (evidence,) = measurer.evidence_for("int8", "onnxruntime", 2, [12])
    assert evidence.kind == "dvc_experiment" and evidence.ref == result.name
    assert (
        "params.yaml:benchmark.batch_sizes=[12]" in evidence.detail
        and f"dvc exp apply {result.name}" in evidence.detail
    )
    # the workspace is untouched, and asking again reuses the experiment
    assert (bench_repo / "params.yaml").read_text() == PARAMS
    again = measurer.measure_cell("int8", "onnxruntime", 2)(12)
    assert again == point and [r.name for r in runner.show()].count(result.name) == 1


def test_a_cell_the_experiment_did_not_measure_is_named(bench_repo: Path) -> None:
    measurer = ExperimentMeasurer(ExperimentRunner(bench_repo), stage="benchmark")
    with pytest.raises(ExperimentError, match=r"has no built variant 'nope'"):
        measurer.measure_cell("nope", "torch", 1)(4)
