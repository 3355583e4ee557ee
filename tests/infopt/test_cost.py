"""Chargeback arithmetic and the `infopt cost` command over a loadgen report and a metrics exposition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.serve import app
from infopt.cost import Usage, chargeback, usage_from_metrics
from infopt.params import CostParams

METRICS = """\
# TYPE infopt_requests_total counter
infopt_requests_total{model="m",sla_class="standard",status="ok",tenant="globex"} 300.0
infopt_requests_total{model="m",sla_class="standard",status="rate_limited",tenant="globex"} 50.0
infopt_requests_total{model="m",sla_class="batch",status="ok",tenant="initech"} 100.0
# TYPE infopt_tenant_device_seconds_total counter
infopt_tenant_device_seconds_total{tenant="globex"} 6.0
infopt_tenant_device_seconds_total{tenant="initech"} 2.0
"""


def test_equal_request_and_device_time_splits_add_up() -> None:
    report = chargeback(
        usage_from_metrics(METRICS),
        device_hours=2.0,
        device="cpu",
        cost=CostParams(hourly_usd={"cpu": 0.5}),
        tenants_sharing=2,
    )
    assert report.total_cost == 1.0
    globex, initech = report.tenants
    assert (globex.requests, initech.requests) == (300, 100)  # only status="ok" is charged
    assert globex.equal_split == initech.equal_split == 0.5  # device_hours * rate / tenants_sharing
    assert (globex.request_split, initech.request_split) == (0.75, 0.25)
    assert (globex.device_time_split, initech.device_time_split) == (0.75, 0.25)


LLM_METRICS = """\
# TYPE infopt_requests_total counter
infopt_requests_total{model="chat",sla_class="premium",status="ok",tenant="acme"} 10.0
infopt_requests_total{model="chat",sla_class="standard",status="ok",tenant="globex"} 10.0
# TYPE infopt_tenant_tokens_total counter
infopt_tenant_tokens_total{kind="prompt",tenant="acme"} 1000.0
infopt_tenant_tokens_total{kind="completion",tenant="acme"} 2000.0
infopt_tenant_tokens_total{kind="prompt",tenant="globex"} 500.0
infopt_tenant_tokens_total{kind="completion",tenant="globex"} 500.0
"""


def test_llm_tokens_split_the_cost_and_price_each_tenant_per_1k_tokens() -> None:
    # 1 device-hour at 0.4 USD shared by two tenants; acme used 3000 tokens, globex 1000 (4000 in all).
    report = chargeback(
        usage_from_metrics(LLM_METRICS), device_hours=1.0, device="cpu", cost=CostParams(hourly_usd={"cpu": 0.4})
    )
    acme, globex = report.tenants
    assert (acme.tokens, globex.tokens) == (3000, 1000)
    assert (acme.token_split, globex.token_split) == (0.3, 0.1)  # 0.4 * 3/4 and 0.4 * 1/4
    assert acme.cost_per_1k_tokens == globex.cost_per_1k_tokens == pytest.approx(0.1)  # 0.4 / 4000 * 1000
    # the spec's equal split charges each 0.2 USD: acme 0.2 / 3k tokens, globex 0.2 / 1k tokens
    assert acme.equal_cost_per_1k_tokens == pytest.approx(0.2 / 3)
    assert globex.equal_cost_per_1k_tokens == pytest.approx(0.2)
    assert acme.request_split == globex.request_split == 0.2  # 10 requests each


def test_cost_command_prices_a_loadgen_report(tmp_path: Path) -> None:
    report = {"elapsed_s": 1800.0, "streams": [{"name": "acme", "ok": 30}, {"name": "globex", "ok": 10}]}
    (tmp_path / "load.json").write_text(json.dumps(report))
    out = tmp_path / "cost.json"
    result = CliRunner().invoke(
        app,
        ["cost", "--loadgen", str(tmp_path / "load.json"), "--replicas", "2", "--device", "cuda", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert (
        written["device_hours"] == 1.0 and written["hourly_rate"] == 4.0 and written["total_cost"] == 4.0
    )  # params.yaml
    by_tenant = {row["tenant"]: row for row in written["tenants"]}
    assert by_tenant["acme"]["request_split"] == 3.0 and by_tenant["globex"]["request_split"] == 1.0
    assert by_tenant["acme"]["equal_split"] == 2.0 and by_tenant["acme"]["cost_center"] == "cc-1001"


def test_cost_needs_exactly_one_source_and_hours_for_metrics(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["cost"]).exit_code == 2
    (tmp_path / "m.txt").write_text(METRICS)
    assert runner.invoke(app, ["cost", "--metrics-file", str(tmp_path / "m.txt")]).exit_code == 2
    ok = runner.invoke(
        app, ["cost", "--metrics-file", str(tmp_path / "m.txt"), "--hours", "1", "--deployment", "textcls-shared"]
    )
    assert ok.exit_code == 0, ok.output


def test_unknown_device_rate_is_an_error_naming_it() -> None:
    from infopt.cost import CostError

    with pytest.raises(CostError, match="'tpu'"):
        chargeback({"a": Usage(1)}, device_hours=1, device="tpu", cost=CostParams())
