"""The nodes' DVC experiments on a real, tiny DVC repository whose `benchmark` and `profile` stages write
metrics/benchmark.json and metrics/profiles/<variant>.json in the pipeline's formats (values computed from
the params, so the answer is known): the batch node's measurer and the profiler's served-batch profile."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agent.experiments import ExperimentError, ExperimentRunner
from agent.measure import ExperimentMeasurer
from agent.profiler import diagnose, served_profile
from tests.agent.conftest import dvc_project

PARAMS = """\
# benchmark.variants and profile.variants are left unset, as in the project's params.yaml
benchmark:
  batch_sizes: [1, 8, 32]
  engines: [torch, onnxruntime]
  threads: [1, 2]
profile:
  batch_size: 8
"""
PROFILE_STAGE = """\
import json
from pathlib import Path

from ruamel.yaml import YAML

config = YAML(typ="safe").load(open("params.yaml"))["profile"]
b = config["batch_size"]
attention = min(90.0, 2.0 * b)  # attention's share grows with the batch
shares = {"attention": attention, "ffn": (100 - attention) * 0.7, "embeddings": (100 - attention) * 0.1,
          "other": (100 - attention) * 0.2}
Path("metrics/profiles").mkdir(parents=True, exist_ok=True)
for v in config.get("variants") or ["fp32", "int8"]:
    report = {"variant": v, "engine": "torch", "batch_size": b, "seq_len": 20.0,
              "split": {g: {"percent": p, "time_ms": p / 10} for g, p in shares.items()},
              "top_ops": [{"op": "aten::mm", "percent": 40.0}]}
    Path(f"metrics/profiles/{v}.json").write_text(json.dumps(report))
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
  profile:
    cmd: {sys.executable} prof.py
    deps:
      - prof.py
    params:
      - profile
    outs:
      - metrics/profiles:
          cache: false
"""


@pytest.fixture
def bench_repo(tmp_path: Path) -> Path:
    return dvc_project(
        tmp_path, {"params.yaml": PARAMS, "bench.py": STAGE, "prof.py": PROFILE_STAGE, "dvc.yaml": DVC_YAML}
    )


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
    result = runner.find(runner.name_for(measurer.changes("int8", "onnxruntime", 2, 12)))
    assert result is not None
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
    again = ExperimentMeasurer(ExperimentRunner(bench_repo)).measure_cell("int8", "onnxruntime", 2)(12)  # a later run
    assert again == point and [r.name for r in runner.show()].count(result.name) == 1


def test_a_cell_the_experiment_did_not_measure_is_named(bench_repo: Path) -> None:
    measurer = ExperimentMeasurer(ExperimentRunner(bench_repo), stage="benchmark")
    with pytest.raises(ExperimentError, match=r"has no built variant 'nope'"):
        measurer.measure_cell("nope", "torch", 1)(4)


def test_the_profiler_profiles_the_served_batch_as_an_experiment(bench_repo: Path) -> None:
    runner = ExperimentRunner(bench_repo)
    committed = (bench_repo / "metrics/profiles/int8.json").read_text()
    assert diagnose(json.loads(committed), "committed").group == "ffn"  # at batch 8
    report, evidence = served_profile(runner, "int8", 32)
    diagnosis = diagnose(report, evidence.ref)
    assert (diagnosis.batch_size, diagnosis.group, diagnosis.percent) == (32, "attention", 64.0)
    assert evidence.kind == "dvc_experiment"
    assert "params.yaml:profile.batch_size=32 -S params.yaml:++profile.variants=[int8] profile" in evidence.detail
    # the experiment profiled only that variant, and the workspace keeps its committed profile
    result = runner.find(evidence.ref)
    assert result is not None
    with pytest.raises(ExperimentError, match=r"no metrics/profiles/fp32\.json in its commit"):
        runner.read(result, "metrics/profiles/fp32.json")
    assert (bench_repo / "metrics/profiles/int8.json").read_text() == committed


def test_a_failed_experiment_is_a_refusal_naming_dvcs_error_not_a_crash() -> None:
    from agent.context import AgentContext
    from agent.contract import Refusal
    from agent.evidence import each_deployment
    from tests.agent.conftest import FIXTURE_MANIFEST, ROOT

    context = AgentContext.load(ROOT, manifest_path=FIXTURE_MANIFEST, traffic=None)

    def examine(deployment: str) -> Refusal:
        raise ExperimentError("`dvc exp run ...` exited with 255:\nERROR: unable to open database file")

    outcomes = each_deployment(context, "profiler", examine)
    assert outcomes and all(isinstance(o, Refusal) and o.guardrail == "evidence" for o in outcomes)
    assert "unable to open database file" in outcomes[0].reason  # type: ignore[union-attr]
