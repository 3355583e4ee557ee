"""The load generator's report: schema, per-stream accounting, open and closed loops, the CLI's JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.loadgen import LoadReport, Stream, parse_stream, run_load
from infopt.manifest import Fingerprint
from serving.app import create_app
from tests.serving.gateway_kit import KEYS, FakeEngine, make_settings, serve, tenant


async def test_report_schema_and_accounting_for_closed_and_open_loops(tiny_model: Path, tmp_path: Path) -> None:
    settings = make_settings(
        tiny_model, tenants=(tenant("acme", "premium"), tenant("initech", "batch", rate=5, burst=2))
    )
    async with serve(create_app(settings, engines=[FakeEngine(service_s=0.005)])) as url:
        report = await run_load(
            url,
            [
                Stream(
                    "acme", KEYS["acme"], mode="closed", concurrency=4, count=40, duration_s=10, sla_class="premium"
                ),
                Stream(
                    "initech", KEYS["initech"], mode="open", rate_per_s=40, count=30, duration_s=5, sla_class="batch"
                ),
            ],
            model="textcls",
            endpoint="v2",
        )
    data = json.loads(report.model_dump_json())
    assert set(data) == {
        "kind",
        "base_url",
        "model",
        "endpoint",
        "elapsed_s",
        "streams",
        "totals",
        "latency_ms",
        "gateway_latency_ms",
        "fingerprint",
    }
    Fingerprint.model_validate(data["fingerprint"])
    LoadReport.model_validate(data)
    acme, initech = report.streams
    assert acme.sent == acme.ok == 40 and acme.throughput_rps > 0 and acme.latency_ms.p50 <= acme.latency_ms.p99
    # the gateway's own time (its Server-Timing header) on the same responses: at least the engine's 5 ms, at
    # most what the client measured
    assert acme.gateway_latency_ms is not None and acme.gateway_latency_ms.p50 is not None
    assert acme.latency_ms.p50 is not None and 5.0 <= acme.gateway_latency_ms.p50 <= acme.latency_ms.p50
    assert initech.sent == 30 and initech.status_429 > 0  # 5/s with a burst of 2 against 40/s arrivals
    for stream in report.streams:
        assert stream.sent == stream.ok + stream.status_429 + stream.status_503 + stream.expired + stream.errors
        assert stream.errors == 0
    assert report.totals.sent == 70
    # the pooled percentiles lie between the streams' own
    pooled, p50s = report.latency_ms, [s.latency_ms.p50 or 0.0 for s in report.streams]
    assert pooled is not None and pooled.p50 is not None and min(p50s) <= pooled.p50 <= max(p50s)
    assert pooled.max == max(s.latency_ms.max or 0.0 for s in report.streams)
    assert report.gateway_latency_ms is not None and report.gateway_latency_ms.p50 is not None


async def test_a_warm_up_is_counted_but_left_out_of_the_latencies(tiny_model: Path) -> None:
    settings = make_settings(tiny_model)
    async with serve(create_app(settings, engines=[FakeEngine(service_s=0.01)])) as url:
        report = await run_load(
            url,
            [Stream("acme", KEYS["acme"], mode="closed", concurrency=1, duration_s=1.0, warmup_s=0.5)],
            model="textcls",
        )
    (stream,) = report.streams
    # one request at a time, >= 10 ms each: about half of them start in the first 0.5 s
    assert stream.ok == stream.sent and stream.warmup_s == 0.5
    assert 0 < stream.latency_samples < stream.ok
    assert stream.latency_ms.p50 is not None and stream.latency_ms.p50 >= 10.0
    with pytest.raises(ValueError, match="warmup_s"):
        Stream("acme", KEYS["acme"], duration_s=1.0, warmup_s=1.0)


def test_stream_specs_parse_and_bad_specs_name_the_problem() -> None:
    stream = parse_stream("name=acme,key=k,mode=open,rate=50,count=10,duration=2,class=premium,warmup=0.5")
    assert (stream.mode, stream.rate_per_s, stream.count, stream.duration_s, stream.sla_class, stream.warmup_s) == (
        "open",
        50.0,
        10,
        2.0,
        "premium",
        0.5,
    )
    with pytest.raises(ValueError, match="key="):
        parse_stream("name=acme,speed=3")
    with pytest.raises(ValueError, match="'burst'"):
        parse_stream("key=k,mode=burst")
