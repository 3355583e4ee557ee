"""The host-effects probe at a tiny size: the engine timed alone and beside Python bursts in this process and
in another, and single requests through a real gateway on 127.0.0.1 back to back and after idle gaps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_a_tiny_run_records_every_condition(tmp_path: Path) -> None:
    out = tmp_path / "host_effects.json"
    command = [sys.executable, "-m", "benchmarks.host_effects", "--batches", "20", "--bursts-ms", "0.5"]
    command += ["--requests", "20", "--gaps-ms", "0", "5", "--out", str(out)]
    subprocess.run(command, check=True, timeout=300, capture_output=True)
    result = json.loads(out.read_text())
    locks, wake = result["lock_wait_ms"], result["idle_wake_ms"]
    assert locks["alone"]["n"] == 20 and set(locks["same_process"]) == set(locks["other_process"]) == {"0.5 ms"}
    for entry in [locks["alone"], locks["same_process"]["0.5 ms"], locks["other_process"]["0.5 ms"]]:
        assert 0 < entry["p50"] <= entry["p99"]
    assert set(wake) == {"0 ms", "5 ms"}
    for gap in wake.values():  # the gateway's own time is part of what the client measured
        assert gap["gateway"]["n"] == gap["client"]["n"] == 20
        assert 0 < gap["gateway"]["p50"] <= gap["client"]["p50"]
    assert result["fingerprint"]["cpu_count"] >= 1
