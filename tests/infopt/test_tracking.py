"""MLflow tracking against a real sqlite store: one run per variant shared by stages, spec metric names."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest

from infopt.fingerprint import collect
from infopt.manifest import AccuracyReport, BatchPoint, Decision, Sweep
from infopt.params import load_params
from infopt.stats import Interval
from infopt.tracking import (
    PARAMS_SHA_TAG,
    TRACKING_ENV,
    VARIANT_TAG,
    log_accuracy,
    log_benchmark,
    log_fingerprint,
    log_stage,
    log_variant_params,
    params_sha,
    tracking_enabled,
    tracking_uri,
    variant_run,
)

REPO = Path(__file__).resolve().parents[2]


def _point(batch: int, p99: float) -> BatchPoint:
    return BatchPoint(
        batch_size=batch,
        throughput_rps=100.0 * batch,
        throughput_rps_min=90.0 * batch,
        throughput_rps_max=110.0 * batch,
        latency_p50_ms=p99 / 2,
        latency_p95_ms=p99 * 0.9,
        latency_p99_ms=p99,
        latency_p99_ms_min=p99 * 0.9,
        latency_p99_ms_max=p99 * 1.2,
        mean_tokens=12.0,
        peak_memory_mb=1.5,
        cost_per_1k_usd=0.002,
        iterations=30,
        rounds=3,
    )


def _sweep(engine: str, threads: int, *points: BatchPoint) -> Sweep:
    return Sweep(engine=engine, threads=threads, device="cpu", points=list(points))  # type: ignore[arg-type]


QUALITY = AccuracyReport(
    engine="onnxruntime",
    execution_device="cpu",
    n=1000,
    accuracy=Interval(estimate=0.8, low=0.77, high=0.83, confidence=0.95),
    macro_f1=Interval(estimate=0.79, low=0.76, high=0.82, confidence=0.95),
)
DECISION = Decision(
    baseline="fp32",
    engine="onnxruntime",
    loss=Interval(estimate=0.01, low=0.004, high=0.016, confidence=0.95),
    mcnemar_p=0.01,
    baseline_only=14,
    variant_only=4,
    budget=0.01,
    within_budget=False,
)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def test_relative_sqlite_uri_resolves_under_cwd(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    params = load_params("params.yaml")
    assert tracking_uri(params) == f"sqlite:///{workdir.resolve() / 'mlflow.db'}"


def test_two_stages_log_into_one_run_per_variant(workdir: Path) -> None:
    params = load_params("params.yaml")
    with variant_run(params, "int8-dynamic", stage="evaluate") as run:
        first_id = run.info.run_id
        log_accuracy("int8_onnx", QUALITY, DECISION)
        log_variant_params(params, "int8-dynamic")
    with variant_run(params, "int8-dynamic", stage="benchmark") as run:
        assert run.info.run_id == first_id
        log_benchmark(
            [
                _sweep("torch", 2, _point(1, 4.0)),
                _sweep("onnxruntime", 1, _point(1, 7.0)),
                _sweep("onnxruntime", 2, _point(1, 2.0), _point(16, 9.0)),
            ]
        )
        log_fingerprint(collect("cpu"))
        log_variant_params(params, "int8-dynamic")  # a second stage re-logging params must not fail
    with variant_run(params, "fp32", stage="benchmark") as run:
        other_id = run.info.run_id
    assert other_id != first_id

    client = mlflow.MlflowClient()
    runs = client.search_runs([run.info.experiment_id], filter_string=f"tags.`{VARIANT_TAG}` = 'int8-dynamic'")
    assert [r.info.run_id for r in runs] == [first_id]
    data = client.get_run(first_id).data
    assert data.tags[PARAMS_SHA_TAG] == params_sha("params.yaml")
    assert {"infopt.stage.evaluate", "infopt.stage.benchmark", "fingerprint.cpu_model"} <= set(data.tags)
    metrics = data.metrics
    assert metrics["int8_accuracy_loss"] == pytest.approx(0.01)
    assert metrics["accuracy_loss_ci_high"] == pytest.approx(0.016) and metrics["within_accuracy_budget"] == 0.0
    assert metrics["accuracy"] == pytest.approx(0.8) and metrics["accuracy_ci_low"] == pytest.approx(0.77)
    # onnxruntime is the primary engine, and its sweep with the most threads gets the unprefixed names
    assert metrics["batch_1_latency_p99_ms"] == pytest.approx(2.0)
    assert metrics["torch_2t_batch_1_latency_p99_ms"] == pytest.approx(4.0)
    assert metrics["onnxruntime_1t_batch_1_latency_p99_ms"] == pytest.approx(7.0)
    assert metrics["onnxruntime_2t_batch_16_latency_p99_ms"] == pytest.approx(9.0)
    assert metrics["batch_16_cost_usd"] == pytest.approx(0.002 / 1000)
    assert metrics["batch_16_cost_per_1k_usd"] == pytest.approx(0.002)
    assert {"batch_1_throughput_req_sec", "batch_1_latency_p50_ms", "batch_1_latency_p95_ms"} <= set(metrics)
    assert data.params["variant.calibration"] == "dynamic"


def test_changed_params_start_a_new_run(workdir: Path) -> None:
    params = load_params("params.yaml")
    with variant_run(params, "fp32", stage="train") as run:
        before = run.info.run_id
    (workdir / "params.yaml").write_text((workdir / "params.yaml").read_text() + "\n# edited\n")
    with variant_run(params, "fp32", stage="train") as run:
        assert run.info.run_id != before


def test_unknown_variant_is_named(workdir: Path) -> None:
    params = load_params("params.yaml")
    with pytest.raises(KeyError, match="nope"), variant_run(params, "nope", stage="train"):
        pass


def test_log_stage_puts_numbers_text_and_curves_into_the_variant_run(workdir: Path) -> None:
    params = load_params("params.yaml")
    values = {"seconds": 12.5, "status": "built", "kd_beats_no_kd": True, "per_epoch": [0.1, 0.2], "none": None}
    log_stage(params, "distilled", "variants", values, curves={"val_accuracy": [0.4, 0.6]}, prefix="build_")
    log_stage(params, "distilled", "variants", {"status": "built"}, prefix="build_")  # re-run: no param clash
    runs = mlflow.search_runs(experiment_names=[params.tracking.experiment], output_format="list")
    assert len(runs) == 1
    data = runs[0].data
    assert data.metrics["build_seconds"] == 12.5 and data.metrics["build_kd_beats_no_kd"] == 1.0
    assert data.params["build_status"] == "built"
    assert "build_per_epoch" not in data.metrics and "build_none" not in data.params
    history = mlflow.MlflowClient().get_metric_history(runs[0].info.run_id, "build_val_accuracy")
    assert [(point.step, point.value) for point in history] == [(1, 0.4), (2, 0.6)]
    assert data.tags["infopt.stage.variants"] == "done"


@pytest.mark.parametrize(
    ("value", "enabled"),
    [
        (None, True),
        ("", True),
        ("on", True),
        ("1", True),
        ("off", False),
        ("OFF", False),
        ("0", False),
        ("false", False),
        ("no", False),
        (" disabled ", False),
    ],
)
def test_tracking_enabled_reads_infopt_tracking(
    monkeypatch: pytest.MonkeyPatch, value: str | None, enabled: bool
) -> None:
    if value is None:
        monkeypatch.delenv(TRACKING_ENV, raising=False)
    else:
        monkeypatch.setenv(TRACKING_ENV, value)
    assert tracking_enabled() is enabled


def test_stages_write_their_files_but_touch_no_mlflow_when_tracking_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """evaluate, benchmark, profile and manifest with INFOPT_TRACKING=off: outputs as usual, no store, no run ids."""
    import infopt.tracking as tracking
    from infopt.manifest import load_manifest
    from model_builds import benchmark, evaluate, manifest, profile
    from tests.model_builds.tiny_build import build_workspace

    build_workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv(TRACKING_ENV, "off")

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("MLflow was used with INFOPT_TRACKING=off")

    # log_stage is left real: stages call it unconditionally and it must return before reaching variant_run
    for name in ("configure", "variant_run", "log_benchmark", "log_fingerprint", "log_model"):
        monkeypatch.setattr(tracking, name, refuse)
    evaluate.main()
    benchmark.main()
    profile.main()
    manifest.main()
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()
    loaded = load_manifest(tmp_path / "artifacts/manifest.json")
    assert [entry.mlflow_run_id for entry in loaded.variants] == [None, None, None]
    assert loaded.variant("fp32").sweeps and (tmp_path / "metrics/summary/fp32.json").is_file()
