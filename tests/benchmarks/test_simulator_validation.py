"""The simulator's validation benchmark end to end at a tiny size: a real gateway process on 127.0.0.1, its
calibrations, one short Poisson load, the prediction; the result file's comparison is consistent with itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_a_tiny_run_writes_a_self_consistent_comparison(tmp_path: Path) -> None:
    out = tmp_path / "validation.json"
    command = [sys.executable, "-m", "benchmarks.simulator_validation", "--loads", "0.1", "--duration", "6"]
    command += ["--seeds", "1", "--sim-seconds", "10", "--overhead-requests", "30", "--calibration-seconds", "0.3"]
    command += ["--min-samples", "10", "--out", str(out)]
    subprocess.run(command, check=True, timeout=300, capture_output=True)
    result = json.loads(out.read_text())
    (load,) = result["loads"]
    pooled = load["all"]
    for row in [pooled, *load["classes"].values()]:
        measured, predicted = row["measured_gateway_p99_ms"], row["predicted_gateway_p99_ms"]
        assert 0 < measured <= row["measured_p99_ms"]  # the gateway's own time is part of what the client saw
        assert row["relative_error_gateway_p99"] == pytest.approx((predicted - measured) / measured, abs=1e-4)
    assert pooled["latency_samples"] == sum(row["latency_samples"] for row in load["classes"].values())
    if pooled["judged"]:
        assert result["max_abs_relative_error_p99"] == pytest.approx(abs(pooled["relative_error_gateway_p99"]))
    else:
        assert pooled["not_judged_because"] and result["max_abs_relative_error_p99"] is None
    assert result["fingerprint"]["cpu_count"] >= 1 and "onnxruntime" in result["fingerprint"]["libraries"]
