"""Traffic as the scaling node reads it: request rates per SLA class over regular time steps.

Two sources give the same `TrafficTrace`:

- A trace file (`read_trace`), JSON Lines or CSV, one row per (step, class):

      {"t": 0, "sla_class": "premium", "rps": 41.5}                   # JSONL
      {"t": 0, "sla_class": "premium", "rps": 41.5, "deployment": "textcls-premium"}

      t,sla_class,rps[,deployment]                                     # CSV with this header
      0,premium,41.5

  `t` is the start of the step in seconds from the start of the trace; steps are regular (the step is the
  smallest gap between distinct `t`, every gap a multiple of it), a class missing at a step has rate 0 (a
  row with rps 0 marks a step with no traffic). `deployment` is optional: rows without it belong to whichever
  deployment serves that SLA class.
- A Prometheus server (agent.prometheus.traffic_from_prometheus): the gateway's
  `sum(rate(infopt_requests_total{model="<deployment>"}[1m])) by (sla_class)` over a time range.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agent.contract import Evidence


class TrafficError(ValueError):
    """The trace is unreadable, irregular or empty; the message names the file and the row."""


class TrafficTrace(BaseModel):
    """Per-class request rates (req/s) over `len(rates)` steps of `step_s` seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step_s: float = Field(gt=0)
    rates: list[dict[str, float]]  # one mapping per step: SLA class -> req/s
    source: str
    evidence: list[Evidence] = Field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return sorted({name for step in self.rates for name in step})

    def totals(self, classes: Sequence[str] | None = None) -> list[float]:
        return [sum(rate for name, rate in step.items() if classes is None or name in classes) for step in self.rates]

    def mix(self, classes: Sequence[str] | None = None) -> dict[str, float]:
        """Each class's share of all requests of the trace (among `classes`)."""
        sums: dict[str, float] = {}
        for step in self.rates:
            for name, rate in step.items():
                if classes is None or name in classes:
                    sums[name] = sums.get(name, 0.0) + rate
        total = sum(sums.values())
        return {name: value / total for name, value in sorted(sums.items())} if total > 0 else {}

    def quantile(self, q: float, classes: Sequence[str] | None = None) -> float:
        """The smallest observed step total that at least `q` of the steps stay at or below."""
        totals = self.totals(classes)
        return float(np.quantile(np.asarray(totals), q, method="inverted_cdf")) if totals else 0.0

    def for_classes(self, classes: Sequence[str]) -> TrafficTrace:
        kept = [{name: rate for name, rate in step.items() if name in classes} for step in self.rates]
        return self.model_copy(update={"rates": kept})

    @property
    def duration_s(self) -> float:
        return self.step_s * len(self.rates)


def _rows_jsonl(path: Path) -> list[tuple[int, dict[str, object]]]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise TrafficError(f"{path}:{number}: not JSON: {error}") from None
        if not isinstance(row, dict):
            raise TrafficError(f"{path}:{number}: a row must be a JSON object, got {type(row).__name__}")
        rows.append((number, row))
    return rows


def _rows_csv(path: Path) -> list[tuple[int, dict[str, object]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"t", "sla_class", "rps"} - set(reader.fieldnames or ())
        if missing:
            raise TrafficError(f"{path}: CSV header {reader.fieldnames} lacks {sorted(missing)}")
        return [(number, dict(row)) for number, row in enumerate(reader, start=2)]


def read_trace(
    path: str | Path, *, deployment: str | None = None, classes: Sequence[str] | None = None
) -> TrafficTrace:
    """Read a trace file; rows of other deployments (when rows name one) and other classes are skipped."""
    path = Path(path)
    if not path.is_file():
        raise TrafficError(f"{path}: trace file not found")
    rows = _rows_csv(path) if path.suffix.lower() == ".csv" else _rows_jsonl(path)
    points: dict[float, dict[str, float]] = {}
    for number, row in rows:
        where = f"{path}:{number}"
        try:
            t = float(row["t"])  # type: ignore[arg-type]
            sla_class = str(row["sla_class"])
            rps = float(row["rps"])  # type: ignore[arg-type]
        except KeyError as error:
            raise TrafficError(f"{where}: missing field {error.args[0]!r} (need t, sla_class, rps)") from None
        except (TypeError, ValueError) as error:
            raise TrafficError(f"{where}: {error}") from None
        if not math.isfinite(t) or t < 0 or not math.isfinite(rps) or rps < 0:
            raise TrafficError(f"{where}: t and rps must be finite and >= 0 (t={t}, rps={rps})")
        named = row.get("deployment")
        if deployment is not None and named not in (None, "", deployment):
            continue
        if classes is not None and sla_class not in classes:
            continue
        step = points.setdefault(t, {})
        if rps > 0:  # a zero row only marks the step as present (rates are 0 unless given)
            step[sla_class] = step.get(sla_class, 0.0) + rps
    if not points:
        raise TrafficError(f"{path}: no rows for deployment {deployment!r} and classes {classes}")
    times = sorted(points)
    gaps = sorted({round(b - a, 9) for a, b in itertools.pairwise(times)})
    step_s = gaps[0] if gaps else 60.0
    for gap in gaps:
        if abs(gap / step_s - round(gap / step_s)) > 1e-6:
            raise TrafficError(f"{path}: step times are not regular (gaps {gaps[:5]} s)")
    count = round((times[-1] - times[0]) / step_s) + 1
    rates: list[dict[str, float]] = [{} for _ in range(count)]
    for t, step in points.items():
        rates[round((t - times[0]) / step_s)] = step
    return TrafficTrace(
        step_s=step_s,
        rates=rates,
        source=str(path),
        evidence=[Evidence(kind="trace", ref=str(path), detail=f"{count} steps of {step_s:g} s")],
    )


def write_trace(trace: TrafficTrace, path: str | Path) -> Path:
    """JSONL in `read_trace`'s format (used to save what Prometheus returned as a reproducible trace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for index, step in enumerate(trace.rates):
            rows = sorted(step.items()) or [(trace.classes[0] if trace.classes else "premium", 0.0)]
            for name, rate in rows:
                handle.write(json.dumps({"t": round(index * trace.step_s, 6), "sla_class": name, "rps": rate}) + "\n")
    return path
