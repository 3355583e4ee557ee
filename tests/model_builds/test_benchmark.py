"""Benchmark stage on real tiny models (torch + ONNX Runtime), and the SLA knee on crafted sweeps."""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from infopt.manifest import BatchPoint, Fingerprint
from infopt.params import BenchmarkParams, load_params
from infopt.sla import best_knee, queue_target, sla_knee
from model_builds import benchmark
from tests.model_builds.tiny_build import build_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="module")
def report(workspace: Path) -> dict:
    return benchmark.run_benchmark(load_params(workspace / "params.yaml"), workspace)


def test_every_cell_is_ordered_positive_and_costed_exactly(report: dict, workspace: Path) -> None:
    params = load_params(workspace / "params.yaml")
    hourly = params.cost.hourly_usd["cpu"]
    cells = [
        (variant, engine, row)
        for variant, entry in report["variants"].items()
        for engine, data in entry.get("engines", {}).items()
        for row in data["points"]
    ]
    assert len(cells) == 3 * len(params.benchmark.batch_sizes)  # fp32 x 2 engines + int8 x onnxruntime
    for variant, engine, row in cells:
        assert row["latency_p50_ms"] <= row["latency_p95_ms"] <= row["latency_p99_ms"], (variant, engine, row)
        assert row["throughput_rps"] > 0
        assert row["iterations"] >= params.benchmark.min_iters or row["stopped_by_max_seconds"]
        assert row["peak_memory_mb"] >= 0
        # throughput is total sequences / total timed time; cost is rate / 3600 / throughput * 1000
        assert row["throughput_rps"] == pytest.approx(row["batch_size"] * row["iterations"] / row["timed_seconds"])
        assert row["cost_per_1k_usd"] == hourly / 3600.0 / row["throughput_rps"] * 1000.0


def test_both_engines_measured_and_skips_recorded(report: dict) -> None:
    assert set(report["variants"]["fp32"]["engines"]) == {"torch", "onnxruntime"}
    assert set(report["variants"]["int8-dynamic"]["engines"]) == {"onnxruntime"}
    assert report["variants"]["fp8"] == {
        "status": "skipped",
        "skip_reason": "fp8 needs a Hopper-class GPU; device is cpu",
    }
    assert set(report["variants"]["fp32"]["sla_knees"]["torch"]) == {"premium", "standard", "batch"}


def test_report_carries_fingerprint_and_method(report: dict) -> None:
    fingerprint = Fingerprint.model_validate(report["fingerprint"])
    assert fingerprint.device == "cpu"
    assert "torch" in fingerprint.libraries
    assert report["timer"] == "time.perf_counter_ns"
    assert "minus the RSS at the start of the cell" in report["memory"]


def test_cost_per_1k_arithmetic() -> None:
    assert benchmark.cost_per_1k(3.6, 1000.0) == pytest.approx(0.001)
    assert benchmark.cost_per_1k(0.096, 50.0) == pytest.approx(0.096 / 3600 / 50 * 1000)


def test_cell_stops_at_max_seconds_and_records_count() -> None:
    config = BenchmarkParams(warmup_iters=0, min_iters=10_000, min_seconds=0.01, max_seconds=0.05)
    ids = np.zeros((3, 4), dtype=np.int64)
    cell = benchmark.measure_cell(lambda a, b: time.sleep(0.005), ids, ids, 2, config, "cpu", 0.1)
    assert cell.stopped_by_max_seconds
    assert 3 <= cell.point.iterations < 20
    assert cell.point.latency_p50_ms >= 5.0


def test_cell_runs_min_iters_and_min_seconds() -> None:
    config = BenchmarkParams(warmup_iters=2, min_iters=7, min_seconds=0.03, max_seconds=5.0)
    calls: list[int] = []
    unpadded: list[bool] = []
    ids = np.arange(20, dtype=np.int64).reshape(5, 4)
    mask = np.zeros_like(ids)

    def infer(batch_ids: np.ndarray, batch_mask: np.ndarray) -> None:
        calls.append(int(batch_ids[0, 0]))
        unpadded.append(bool(batch_mask.all()))
        time.sleep(0.001)

    cell = benchmark.measure_cell(infer, ids, mask, 2, config, "cpu", 0.1)
    assert not cell.stopped_by_max_seconds
    assert cell.point.iterations >= 7 and cell.timed_seconds >= 0.02
    assert len(calls) == cell.point.iterations + 3  # 2 warm-up batches + 1 unpadded warm-up, none timed
    assert calls[:4] == [0, 8, 8, 16]  # consecutive batches cycle through the encoded set
    assert unpadded[:4] == [False, False, True, False]  # the unpadded attention path is warmed up too


def test_main_writes_plot_data_and_logs_spec_metrics(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workspace / 'mlflow.db'}")
    benchmark.main()
    plot = json.loads((workspace / "plots/latency_vs_batch.json").read_text())
    assert "fingerprint" in plot
    assert {row["series"] for row in plot["latency_vs_batch"]} == {
        "fp32/torch",
        "fp32/onnxruntime",
        "int8-dynamic/onnxruntime",
    }
    assert (workspace / "plots/latency_vs_batch.png").stat().st_size > 1000
    runs = mlflow.search_runs(experiment_names=["infopt"], output_format="list")
    by_variant = {run.data.tags["infopt.variant"]: run for run in runs}
    assert set(by_variant) == {"fp32", "int8-dynamic", "fp8"}
    metrics = by_variant["fp32"].data.metrics
    assert metrics["batch_4_latency_p99_ms"] == metrics["onnxruntime_batch_4_latency_p99_ms"]
    assert {"torch_batch_1_throughput_req_sec", "batch_1_cost_usd", "batch_4_cost_per_1k_usd"} <= set(metrics)


# ----------------------------------------------------------------------------- knee
def _sweep(*rows: tuple[int, float, float]) -> list[BatchPoint]:
    return [
        BatchPoint(
            batch_size=b,
            throughput_rps=t,
            latency_p50_ms=p99 / 2,
            latency_p95_ms=p99 * 0.9,
            latency_p99_ms=p99,
            peak_memory_mb=0.0,
            cost_per_1k_usd=1.0 / t,
            iterations=30,
        )
        for b, p99, t in rows
    ]


SWEEP = _sweep((1, 4.0, 250.0), (4, 10.0, 400.0), (8, 30.0, 600.0), (16, 70.0, 500.0))


def test_knee_is_largest_batch_within_sla() -> None:
    knee = sla_knee(SWEEP, "premium", 50.0, "onnxruntime")
    assert (knee.batch_size, knee.meets_sla, knee.latency_p99_ms) == (8, True, 30.0)
    assert knee.queue_target == 5  # floor((50 - 30) / 30 * 8) = floor(5.33)
    standard = sla_knee(SWEEP, "standard", 100.0, "onnxruntime")
    assert (standard.batch_size, standard.queue_target) == (16, 6)  # floor(30 / 70 * 16) = floor(6.86)


def test_knee_when_nothing_meets_sla() -> None:
    knee = sla_knee(SWEEP, "premium", 2.0, "torch")
    assert (knee.batch_size, knee.meets_sla, knee.queue_target) == (1, False, 1)


def test_knee_for_batch_class_is_max_throughput() -> None:
    knee = sla_knee(SWEEP, "batch", None, "torch")
    assert (knee.batch_size, knee.throughput_rps, knee.queue_target, knee.meets_sla) == (8, 600.0, 32, True)


def test_queue_target_clamps_to_one() -> None:
    assert queue_target(50.0, 49.0, 4) == 1
    assert queue_target(100.0, 10.0, 4) == 36


def test_best_knee_prefers_meeting_then_throughput() -> None:
    missing = sla_knee(SWEEP, "premium", 2.0, "torch")
    slow = sla_knee(_sweep((1, 10.0, 100.0)), "premium", 50.0, "torch")
    fast = sla_knee(SWEEP, "premium", 50.0, "onnxruntime")
    assert best_knee([missing, slow, fast]).engine == "onnxruntime"
    assert best_knee([missing, slow]) == slow


# ----------------------------------------------------------------------------- engines per device
def test_onnxruntime_device_without_a_cuda_provider_is_the_cpu_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    from infopt.device import onnxruntime_device

    assert onnxruntime_device("cpu") == ("cpu", None)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    where, reason = onnxruntime_device("cuda")
    assert where == "cpu" and "no CUDAExecutionProvider" in reason and "CPUExecutionProvider" in reason
    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert onnxruntime_device("cuda") == ("cuda", None)


def test_fp8_artifacts_open_in_the_fp8_engine_which_refuses_the_cpu() -> None:
    from infopt.engines.base import EngineError
    from infopt.manifest import Artifact
    from model_builds.measuring import open_engine

    artifact = Artifact(
        engine="torch", format="hf-safetensors", precision="fp8", path="nowhere", sha256="0" * 64, size_bytes=1
    )
    with pytest.raises(EngineError, match="fp8 needs"):
        benchmark.open_engine(artifact, "cpu", 1)
    with pytest.raises(EngineError, match="fp8 needs"):
        open_engine(artifact, "cpu")


def test_report_records_engine_class_and_onnxruntime_providers(report: dict) -> None:
    fp32 = report["variants"]["fp32"]["engines"]
    assert fp32["onnxruntime"]["providers"] == ["CPUExecutionProvider"]
    assert (
        fp32["torch"]["engine_class"] == "infopt.engines.torch_engine.TorchEngine" and "providers" not in fp32["torch"]
    )
    assert report["onnxruntime_device"] == "cpu" and report["onnxruntime_skipped"] is None
