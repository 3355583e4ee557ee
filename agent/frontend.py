"""The gateway's front-end CPU per request, from evidence: what its event loop spends on one request outside the
engine (HTTP parsing, JSON, tokenisation, response encoding), in the simulator's terms (agent.simulator.HostModel).

Two sources, never a constant:
- Prometheus (agent/prometheus.py `frontend_cpu_from_prometheus`): the gateway's CPU rate
  (`infopt_gateway_cpu_seconds_total`: every process of it, the HTTP workers of a multi-process gateway too)
  minus its engine seconds, over its request rate, in the window the traffic was read from.
- A committed benchmark result: the simulator validation's calibration records the gateway's loop CPU per
  request (the process's CPU on single requests minus its engine seconds) for an ONNX Runtime gateway.

Without either, the scaling node runs the engine-only model and says so.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.contract import Evidence
from agent.simulator import HostModel

# Committed results that record the gateway's front-end CPU per request, by the engine the gateway ran: the
# validation benchmark serves an ONNX Runtime model (benchmarks/simulator_validation.py `build_model`).
COMMITTED_MEASUREMENTS = {"onnxruntime": "benchmarks/results/simulator_validation.json"}
_ENGINE_TEXT = {"onnxruntime": "ONNX Runtime"}  # how that file's /method/model names the engine
_FIELD = "gateway_loop_cpu_ms_per_request"


class FrontEndCpuError(ValueError):
    """A source of the front-end CPU exists but does not hold the quantity; the message names file and field."""


@dataclass(frozen=True)
class FrontEndCpu:
    """Measured CPU seconds per request on the gateway's event loop, with where it came from."""

    seconds_per_request: float
    source: str  # where: the committed file, or the Prometheus server and window
    how: str  # how it was measured, for the notes and risks
    evidence: tuple[Evidence, ...]

    def __post_init__(self) -> None:
        if not self.seconds_per_request >= 0:
            raise FrontEndCpuError(f"{self.source}: CPU per request is {self.seconds_per_request}; must be >= 0")


def host_model(front_end: FrontEndCpu, *, cores: float, engine_threads: int) -> HostModel:
    """The pod as the simulator's host: its event loop does the front-end CPU (half before the queue, half after
    the batch, as the validation benchmark splits it) on `cores` it shares with the engine's threads. The
    client is elsewhere and nothing else runs in the pod."""
    half = front_end.seconds_per_request / 2
    return HostModel(cores=cores, loop_in_s=half, loop_out_s=half, engine_cores=float(engine_threads))


def _at(data: Any, pointer: Sequence[str | int], path: str) -> Any:
    """The value at a JSON pointer, or FrontEndCpuError naming the file and the pointer."""
    value = data
    for key in pointer:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            raise FrontEndCpuError(f"{path}: no {_pointer(pointer)}") from None
    return value


def _pointer(parts: Sequence[str | int]) -> str:
    return "/" + "/".join(str(part) for part in parts)


def frontend_cpu_from_results(root: Path, engine: str) -> FrontEndCpu | None:
    """The committed measurement for a gateway on `engine`: the median over the file's loads of each load's
    calibrated loop CPU per request. None when no committed file measures that engine."""
    relative = COMMITTED_MEASUREMENTS.get(engine)
    if relative is None or not (root / relative).is_file():
        return None
    path = root / relative
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise FrontEndCpuError(f"{relative}: not JSON ({error})") from None
    model = _at(data, ["method", "model"], relative)
    if _ENGINE_TEXT[engine] not in str(model):
        raise FrontEndCpuError(f"{relative}: /method/model is {model!r}; expected a gateway on {_ENGINE_TEXT[engine]}")
    loads = _at(data, ["loads"], relative)
    if not isinstance(loads, list) or not loads:
        raise FrontEndCpuError(f"{relative}: /loads is empty; expected the calibrated loads")
    values = []
    for index in range(len(loads)):
        value = _at(data, ["loads", index, "calibration", "host", _FIELD], relative)
        if not isinstance(value, int | float) or value < 0:
            raise FrontEndCpuError(
                f"{relative}: {_pointer(['loads', index, 'calibration', 'host', _FIELD])} is {value!r}; must be a "
                "number >= 0 (ms)"
            )
        values.append(float(value))
    chosen = values.index(statistics.median_low(values))  # an entry the reviewer can find, not an interpolation
    pointer = _pointer(["loads", chosen, "calibration", "host", _FIELD])
    fingerprint = data.get("fingerprint", {})
    machine = f"{fingerprint.get('cpu_model', '?')}, {fingerprint.get('cpu_count', '?')} cores"
    return FrontEndCpu(
        seconds_per_request=values[chosen] / 1000.0,
        source=relative,
        how=f"the gateway process's CPU minus its engine's on single requests, {_ENGINE_TEXT[engine]}, {machine}",
        evidence=(
            Evidence(
                kind="file",
                ref=relative,
                detail=f"{pointer}: {values[chosen]:g} ms CPU per request on the gateway's event loop, the median "
                f"of {len(values)} calibrations ({min(values):g}-{max(values):g} ms; {_ENGINE_TEXT[engine]}, "
                f"{machine})",
            ),
        ),
    )
