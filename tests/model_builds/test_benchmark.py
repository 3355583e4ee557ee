"""Benchmark stage on real tiny models (torch + ONNX Runtime): served-shape batches, rounds, medians and spread."""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from pydantic import ValidationError

from infopt.manifest import Fingerprint, Sweep
from infopt.params import BenchmarkParams, Params, load_params
from model_builds import benchmark
from tests.model_builds.tiny_build import build_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="module")
def report(workspace: Path) -> dict:
    return benchmark.run_benchmark(load_params(workspace / "params.yaml"), workspace)


def sweeps(report: dict, variant: str) -> list[Sweep]:
    return benchmark.sweeps_of(report, variant)


def test_every_engine_and_thread_count_is_swept_with_medians_inside_the_spread(report: dict, workspace: Path) -> None:
    params = load_params(workspace / "params.yaml")
    hourly = params.cost.hourly_usd["cpu"]
    measured = {(variant, s.engine, s.threads) for variant in ("fp32", "int8-dynamic") for s in sweeps(report, variant)}
    assert measured == {
        ("fp32", "torch", 1),
        ("fp32", "torch", 2),
        ("fp32", "onnxruntime", 1),
        ("fp32", "onnxruntime", 2),
        ("int8-dynamic", "onnxruntime", 1),
        ("int8-dynamic", "onnxruntime", 2),
    }
    for variant in ("fp32", "int8-dynamic"):
        for sweep in sweeps(report, variant):
            assert [p.batch_size for p in sweep.points] == params.benchmark.batch_sizes
            for point in sweep.points:
                assert point.rounds == params.benchmark.repeats
                assert point.throughput_rps_min <= point.throughput_rps <= point.throughput_rps_max
                assert point.latency_p99_ms_min <= point.latency_p99_ms <= point.latency_p99_ms_max
                assert point.iterations >= point.rounds  # min_iters, or fewer when max_seconds cut a round
                assert point.cost_per_1k_usd == pytest.approx(hourly / 3600.0 / point.throughput_rps * 1000.0)


def test_skips_fingerprint_and_method_are_recorded(report: dict) -> None:
    assert report["variants"]["fp8"] == {
        "status": "skipped",
        "skip_reason": "fp8 needs a Hopper-class GPU; device is cpu",
    }
    fingerprint = Fingerprint.model_validate(report["fingerprint"])
    assert fingerprint.device == "cpu" and "torch" in fingerprint.libraries
    assert report["timer"] == "time.perf_counter_ns" and report["threads"] == [1, 2]
    assert "padded to its longest row" in report["shape"]
    fp32 = {(row["engine"], row["threads"]): row for row in report["variants"]["fp32"]["sweeps"]}
    assert fp32[("onnxruntime", 1)]["providers"] == ["CPUExecutionProvider"]
    assert fp32[("torch", 1)]["engine_class"] == "infopt.engines.torch_engine.TorchEngine"


def test_served_batches_pad_like_the_gateway_codec(workspace: Path) -> None:
    """The benchmark's batch of some texts equals what the gateway's codec builds for the same texts."""
    from infopt.manifest import Artifact
    from model_builds.measuring import load_texts
    from serving.codec import Codec

    texts = load_texts("test", workspace)
    path = "artifacts/variants/fp32/onnx"
    artifact = Artifact(engine="onnxruntime", format="onnx", precision="fp32", path=path, sha256="0" * 64, size_bytes=1)
    batches = benchmark.served_batches(artifact, texts, 16, workspace)
    order = np.random.default_rng(benchmark.SHUFFLE_SEED).permutation(len(texts))  # the benchmark's fixed order
    codec = Codec(workspace / path, max_seq_len=16)
    for size, index in ((1, 0), (4, 1), (8, 2)):
        ids, mask = batches.batch(size, index)
        start = index * size
        same_texts = [texts[order[(start + k) % len(texts)]] for k in range(size)]
        gateway_ids, gateway_mask = codec.collate(codec.encode(same_texts)[0])
        assert np.array_equal(ids, gateway_ids) and np.array_equal(mask, gateway_mask), (size, index)
        assert ids.shape[1] == int(mask.sum(axis=1).max()) <= 16  # padded to the longest row, not to max_seq_len


def test_round_stops_at_max_seconds() -> None:
    config = BenchmarkParams(warmup_iters=0, min_iters=10_000, min_seconds=0.01, max_seconds=0.5)
    batches = benchmark.ServedBatches([[2, 5, 3], [2, 6, 7, 3]], pad_id=0)
    measured = benchmark.measure_round(lambda a, b: time.sleep(0.005), batches, 2, config, "cpu")
    assert measured.stopped_by_max_seconds  # long before min_iters
    assert 1 <= len(measured.latencies_ms) <= 100 and min(measured.latencies_ms) >= 5.0
    assert set(measured.widths) == {4}  # two rows of 3 and 4 tokens: padded to 4


def test_round_warms_up_padded_and_unpadded_then_times_min_iters() -> None:
    config = BenchmarkParams(warmup_iters=2, min_iters=7, min_seconds=0.02, max_seconds=5.0)
    rows = [[2, 9, 3], [2, 9, 9, 9, 3], [2, 3]]
    batches = benchmark.ServedBatches(rows, pad_id=0)
    widths: list[int] = []
    unpadded: list[bool] = []

    def infer(ids: np.ndarray, mask: np.ndarray) -> None:
        widths.append(ids.shape[1])
        unpadded.append(bool(mask.all()))
        time.sleep(0.001)

    measured = benchmark.measure_round(infer, batches, 2, config, "cpu")
    assert len(measured.latencies_ms) >= 7 and not measured.stopped_by_max_seconds
    assert len(widths) == len(measured.latencies_ms) + 3  # 2 warm-up batches + 1 unpadded warm-up, untimed
    assert unpadded[2] is True  # the unpadded attention path is warmed up too


def test_batch_point_takes_medians_over_rounds_and_keeps_the_spread() -> None:
    rounds = [
        benchmark.Round(latencies_ms=[10.0] * 10, widths=[8] * 10, stopped_by_max_seconds=False),  # 400 req/s at 4
        benchmark.Round(latencies_ms=[20.0] * 10, widths=[12] * 10, stopped_by_max_seconds=False),  # 200
        benchmark.Round(latencies_ms=[8.0] * 10, widths=[10] * 10, stopped_by_max_seconds=False),  # 500
    ]
    point = benchmark.batch_point(4, rounds, peak_memory_mb=1.0, hourly_usd=3.6)
    assert (point.throughput_rps, point.throughput_rps_min, point.throughput_rps_max) == pytest.approx((400, 200, 500))
    assert (point.latency_p99_ms, point.latency_p99_ms_min, point.latency_p99_ms_max) == pytest.approx((10, 8, 20))
    assert point.mean_tokens == pytest.approx(10.0) and point.rounds == 3 and point.iterations == 30
    assert point.cost_per_1k_usd == pytest.approx(3.6 / 3600 / 400 * 1000)


def test_fp8_artifacts_open_in_the_fp8_engine_which_refuses_the_cpu() -> None:
    from infopt.engines.base import EngineError
    from infopt.manifest import Artifact
    from model_builds.measuring import open_engine

    artifact = Artifact(
        engine="torch", format="hf-safetensors", precision="fp8", path="nowhere", sha256="0" * 64, size_bytes=1
    )
    with pytest.raises(EngineError, match="fp8 needs"):
        open_engine(artifact, "cpu")


def test_onnxruntime_device_without_a_cuda_provider_is_the_cpu_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    from infopt.device import onnxruntime_device

    assert onnxruntime_device("cpu") == ("cpu", None)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    where, reason = onnxruntime_device("cuda")
    assert where == "cpu" and reason is not None and "no CUDAExecutionProvider" in reason


def test_main_writes_plot_data_and_logs_spec_metrics(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workspace / 'mlflow.db'}")
    benchmark.main()
    plot = json.loads((workspace / "plots/latency_vs_batch.json").read_text())
    assert "fingerprint" in plot
    assert {row["series"] for row in plot["latency_vs_batch"]} == {
        "fp32/torch/1t",
        "fp32/torch/2t",
        "fp32/onnxruntime/1t",
        "fp32/onnxruntime/2t",
        "int8-dynamic/onnxruntime/1t",
        "int8-dynamic/onnxruntime/2t",
    }
    assert (workspace / "plots/latency_vs_batch.png").stat().st_size > 1000
    runs = mlflow.search_runs(experiment_names=["infopt"], output_format="list")
    by_variant = {run.data.tags["infopt.variant"]: run for run in runs}
    assert set(by_variant) == {"fp32", "int8-dynamic", "fp8"}
    metrics = by_variant["fp32"].data.metrics
    assert metrics["batch_4_latency_p99_ms"] == metrics["onnxruntime_2t_batch_4_latency_p99_ms"]
    assert {"torch_1t_batch_1_throughput_req_sec", "batch_1_cost_usd", "batch_4_cost_per_1k_usd"} <= set(metrics)


def test_benchmark_variants_narrows_the_run_and_names_an_unknown_variant(workspace: Path) -> None:
    params = load_params(workspace / "params.yaml")
    narrow = params.model_copy(
        update={
            "benchmark": params.benchmark.model_copy(
                update={"variants": ["int8-dynamic"], "batch_sizes": [2], "threads": [1], "repeats": 1}
            )
        }
    )
    report = benchmark.run_benchmark(narrow, workspace)
    assert list(report["variants"]) == ["int8-dynamic"]
    (sweep,) = sweeps(report, "int8-dynamic")
    assert (sweep.engine, sweep.threads, [p.batch_size for p in sweep.points]) == ("onnxruntime", 1, [2])
    wrong = {**params.model_dump(), "benchmark": {**params.benchmark.model_dump(), "variants": ["nope"]}}
    with pytest.raises(ValidationError, match=r"benchmark.variants names \['nope'\]: not enabled"):
        Params.model_validate(wrong)
