"""The gateway's front-end CPU per request: the Prometheus arithmetic on crafted series, the committed
measurement's reader on crafted and on the committed file, and the host model the scaling node simulates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from agent.frontend import FrontEndCpu, FrontEndCpuError, frontend_cpu_from_results, host_model
from agent.prometheus import (
    PrometheusError,
    Series,
    engine_seconds_query,
    frontend_cpu_from_prometheus,
    gateway_cpu_query,
    total_requests_query,
)

ROOT = Path(__file__).resolve().parents[2]
RESULTS = "benchmarks/results/simulator_validation.json"
END, WINDOW, STEP = 10_000.0, 180.0, 60.0
T = [END - WINDOW + STEP * index for index in range(4)]  # the four steps of the window


class CraftedPrometheus:
    """Answers each range query with the series given for it (any other query: no series)."""

    base_url = "http://prometheus.test"

    def __init__(self, answers: dict[str, list[Series]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, float, float, float]] = []

    def query_range(self, promql: str, start: float, end: float, step_s: float) -> list[Series]:
        self.asked.append((promql, start, end, step_s))
        return self.answers.get(promql, [])


def series(*values: float | None) -> list[Series]:
    return [Series({}, [(t, value) for t, value in zip(T, values, strict=True) if value is not None])]


def crafted(cpu: list[Series], engine: list[Series], requests: list[Series]) -> CraftedPrometheus:
    return CraftedPrometheus(
        {
            gateway_cpu_query("textcls-shared"): cpu,
            engine_seconds_query("textcls-shared"): engine,
            total_requests_query("textcls-shared"): requests,
        }
    )


def test_queries_take_the_series_of_the_deployments_gateways() -> None:
    # the gateway CPU carries the deployment's `model` label; the engine seconds only the target's
    assert gateway_cpu_query("textcls-shared", "5m") == (
        'sum(rate(infopt_gateway_cpu_seconds_total{model="textcls-shared"}[5m]))'
    )
    assert engine_seconds_query("textcls-shared") == (
        'sum(rate(infopt_tenant_device_seconds_total[1m]) and on(instance) infopt_model_ready{model="textcls-shared"})'
    )
    assert total_requests_query("textcls-shared") == 'sum(rate(infopt_requests_total{model="textcls-shared"}[1m]))'


def test_cpu_per_request_is_the_ratio_of_the_rates_over_the_window() -> None:
    # Steps 0 and 1 count: (0.5 + 0.9 - 0.1 - 0.3) CPU-s/s over (100 + 200) req/s = 1/300 s. Step 2 has no
    # requests (its NaN engine rate goes with it) and step 3 no CPU sample: a missing sample is not zero CPU.
    client = crafted(
        cpu=series(0.5, 0.9, 0.4, None),
        engine=series(0.1, 0.3, math.nan, 0.2),
        requests=series(100.0, 200.0, 0.0, 50.0),
    )
    found = frontend_cpu_from_prometheus(client, "textcls-shared", window_s=WINDOW, step_s=STEP, end=END)  # type: ignore[arg-type]
    assert found is not None
    assert found.seconds_per_request == pytest.approx(1 / 300)
    assert {(start, end, step) for _, start, end, step in client.asked} == {(END - WINDOW, END, STEP)}
    assert [item.ref for item in found.evidence] == [
        gateway_cpu_query("textcls-shared"),
        engine_seconds_query("textcls-shared"),
        total_requests_query("textcls-shared"),
    ]
    assert "= 3.333 ms CPU per request" in found.evidence[0].detail
    assert found.source == f"Prometheus http://prometheus.test, [{END - WINDOW:.0f}, {END:.0f}] step 60 s"


def test_no_gateway_cpu_gives_no_value() -> None:
    client = crafted(cpu=[], engine=series(0.1, 0.1, 0.1, 0.1), requests=series(10.0, 10.0, 10.0, 10.0))
    assert frontend_cpu_from_prometheus(client, "textcls-shared", window_s=WINDOW, step_s=STEP, end=END) is None  # type: ignore[arg-type]


def test_engine_seconds_above_the_gateway_cpu_are_refused_naming_the_queries() -> None:
    client = crafted(cpu=series(0.2, 0.2, 0.2, 0.2), engine=series(0.9, 0.9, 0.9, 0.9), requests=series(*[10.0] * 4))
    with pytest.raises(PrometheusError, match=r"engine does not run in the gateway's processes") as error:
        frontend_cpu_from_prometheus(client, "textcls-shared", window_s=WINDOW, step_s=STEP, end=END)  # type: ignore[arg-type]
    assert gateway_cpu_query("textcls-shared") in str(error.value)


def write_results(root: Path, loop_ms: list[object], model: str = "BERT encoder, ONNX Runtime fp32") -> None:
    path = root / RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    loads = [{"calibration": {"host": {"gateway_loop_cpu_ms_per_request": value}}} for value in loop_ms]
    fingerprint = {"cpu_model": "Crafted CPU", "cpu_count": 2}
    path.write_text(json.dumps({"method": {"model": model}, "loads": loads, "fingerprint": fingerprint}))


def test_committed_measurement_is_the_median_load_and_names_its_pointer(tmp_path: Path) -> None:
    write_results(tmp_path, [0.9, 0.7, 0.8, 0.75])
    found = frontend_cpu_from_results(tmp_path, "onnxruntime")
    assert found is not None
    assert found.seconds_per_request == pytest.approx(0.00075)  # the lower median of 0.7, 0.75, 0.8, 0.9: a real entry
    (evidence,) = found.evidence
    assert (evidence.kind, evidence.ref) == ("file", RESULTS)
    assert evidence.detail.startswith("/loads/3/calibration/host/gateway_loop_cpu_ms_per_request: 0.75 ms")
    assert found.source == RESULTS and "Crafted CPU, 2 cores" in found.how


def test_no_committed_measurement_for_another_engine_or_without_the_file(tmp_path: Path) -> None:
    assert frontend_cpu_from_results(tmp_path, "onnxruntime") is None
    write_results(tmp_path, [0.8])
    assert frontend_cpu_from_results(tmp_path, "torch") is None


@pytest.mark.parametrize(
    ("loop_ms", "model", "message"),
    [
        ([0.8, None], "ONNX Runtime", r"/loads/1/calibration/host/gateway_loop_cpu_ms_per_request is None"),
        ([0.8, -1], "ONNX Runtime", r"/loads/1/calibration/host/gateway_loop_cpu_ms_per_request is -1"),
        ([], "ONNX Runtime", r"/loads is empty"),
        ([0.8], "PyTorch eager", r"/method/model is 'PyTorch eager'; expected a gateway on ONNX Runtime"),
    ],
)
def test_a_committed_file_without_the_quantity_is_an_error_naming_file_and_field(
    tmp_path: Path, loop_ms: list[object], model: str, message: str
) -> None:
    write_results(tmp_path, loop_ms, model)
    with pytest.raises(FrontEndCpuError, match=f"^{RESULTS}: .*{message}"):
        frontend_cpu_from_results(tmp_path, "onnxruntime")


def test_the_committed_validation_result_records_the_loop_cpu() -> None:
    found = frontend_cpu_from_results(ROOT, "onnxruntime")
    assert found is not None and found.source == RESULTS
    assert 0 < found.seconds_per_request < 0.01  # a fraction of a millisecond to a few: CPU per request, not a rate
    assert "/calibration/host/gateway_loop_cpu_ms_per_request" in found.evidence[0].detail


def test_host_model_splits_the_cpu_around_the_queue_on_the_pods_cores() -> None:
    host = host_model(FrontEndCpu(0.004, "crafted", "crafted", ()), cores=0.5, engine_threads=1)
    assert (host.cores, host.loop_in_s, host.loop_out_s, host.engine_cores) == (0.5, 0.002, 0.002, 1.0)
    assert (host.client_send_s, host.client_receive_s, host.background_cores) == (0.0, 0.0, 0.0)
