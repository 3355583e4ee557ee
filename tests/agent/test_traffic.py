"""Trace files: the documented JSONL and CSV formats, filtering, regular steps, quantiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.traffic import TrafficError, TrafficTrace, read_trace, write_trace


def test_jsonl_and_csv_read_the_same_trace(tmp_path: Path) -> None:
    rows = [(0, "premium", 10.0), (0, "standard", 5.0), (60, "premium", 30.0), (120, "standard", 7.5)]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("".join(json.dumps({"t": t, "sla_class": c, "rps": r}) + "\n" for t, c, r in rows))
    csv = tmp_path / "t.csv"
    csv.write_text("t,sla_class,rps\n" + "".join(f"{t},{c},{r}\n" for t, c, r in rows))
    for path in (jsonl, csv):
        trace = read_trace(path)
        assert trace.step_s == 60
        assert trace.rates == [{"premium": 10.0, "standard": 5.0}, {"premium": 30.0}, {"standard": 7.5}]
        assert trace.totals() == [15.0, 30.0, 7.5]
        assert trace.mix() == pytest.approx({"premium": 40 / 52.5, "standard": 12.5 / 52.5})


def test_rows_of_other_deployments_and_classes_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"t": 0, "sla_class": "premium", "rps": 10, "deployment": "textcls-premium"}\n'
        '{"t": 0, "sla_class": "premium", "rps": 99, "deployment": "other"}\n'
        '{"t": 0, "sla_class": "batch", "rps": 3}\n'
    )
    trace = read_trace(path, deployment="textcls-premium", classes=["premium"])
    assert trace.rates == [{"premium": 10.0}]


def test_bad_rows_and_irregular_steps_are_named(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"t": 0, "sla_class": "premium", "rps": 1}\n{"t": 1, "sla_class": "premium"}\n')
    with pytest.raises(TrafficError, match=r"t.jsonl:2: missing field 'rps'"):
        read_trace(path)
    path.write_text("".join(json.dumps({"t": t, "sla_class": "premium", "rps": 1}) + "\n" for t in (0, 60, 100)))
    with pytest.raises(TrafficError, match="not regular"):
        read_trace(path)
    with pytest.raises(TrafficError, match="trace file not found"):
        read_trace(tmp_path / "missing.jsonl")


def test_coverage_quantile_is_an_observed_step() -> None:
    trace = TrafficTrace(step_s=60, rates=[{"premium": float(r)} for r in range(1, 21)], source="x")
    assert trace.quantile(0.95) == 19.0  # 19 of 20 steps (95%) are at or below 19
    assert trace.quantile(1.0) == 20.0
    assert trace.quantile(0.5) == 10.0


def test_written_trace_reads_back(tmp_path: Path) -> None:
    trace = TrafficTrace(step_s=30, rates=[{"premium": 1.5}, {}, {"premium": 2.0, "batch": 4.0}], source="x")
    again = read_trace(write_trace(trace, tmp_path / "out.jsonl"))
    assert again.rates == trace.rates and again.step_s == 30
