"""The gateway-workers benchmark serves the configuration the ladder carried last, and refuses one without batching."""

from __future__ import annotations

import pytest

from benchmarks.gateway_workers import final_configuration


def _step(candidate: str, batching: dict | None, rps: float) -> dict:
    return {"carried": {"engine": {"variant": candidate}, "batching": batching, "point": {"throughput_rps": rps}}}


def test_the_last_carried_configuration_is_served() -> None:
    ladder = {"steps": [_step("fp32", None, 100.0), _step("static", {"max_batch_size": 64}, 9000.0), {"carried": None}]}
    engine, batching, rps = final_configuration(ladder)
    assert engine == {"variant": "static"} and batching == {"max_batch_size": 64} and rps == 9000.0


def test_a_ladder_that_never_batched_is_refused() -> None:
    with pytest.raises(SystemExit, match="no batching"):
        final_configuration({"steps": [_step("fp32", None, 100.0)]})
