"""The framework comparison in reduced form (a few requests): every framework runs for real and the table
has its schema. Speed is not asserted here; the committed full run is benchmarks/results/framework_comparison.*."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmarks.framework_comparison import FRAMEWORKS, ROW_FIELDS
from cli.main import _register_subcommands, app
from model_builds.tiny_llama import build_tiny_llama

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.vllm]


@pytest.fixture(scope="module")
def reduced_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    folder = tmp_path_factory.mktemp("compare")
    model = build_tiny_llama(folder / "model")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    mp.setenv("INFOPT_TRACKING", "on")
    try:
        _register_subcommands()
        args = [
            "llm", "compare", "--params", str(REPO / "params.yaml"), "--model-dir", str(model),
            "--requests", "4", "--concurrency", "2", "--prompt-tokens", "16", "--output-tokens", "4",
            "--overhead-pairs", "2", "--threads", "1", "--out-dir", str(folder / "results"),
        ]  # fmt: skip
        result = CliRunner().invoke(app, args)
    finally:
        mp.undo()
    assert result.exit_code == 0, result.output
    report = json.loads((folder / "results" / "framework_comparison.json").read_text())
    return report, (folder / "results" / "framework_comparison.md").read_text()


def test_every_framework_has_a_row_with_the_full_schema(reduced_run: tuple[dict, str]) -> None:
    report, _ = reduced_run
    assert [row["framework"] for row in report["rows"]] == list(FRAMEWORKS)
    for row in report["rows"]:
        assert tuple(row) == ROW_FIELDS, row["framework"]
        assert row["status"] in ("ok", "failed", "not run"), row
        if row["status"] != "ok":
            assert row["reason"], row  # a row that did not run says why
    ran = {row["framework"]: row for row in report["rows"] if row["status"] == "ok"}
    # vLLM and the naive baseline run on every machine CI runs on
    reasons = [(row["framework"], row["status"], row["reason"]) for row in report["rows"]]
    assert {"vllm-gateway", "vllm-direct", "transformers-naive"} <= set(ran), reasons
    for name, row in ran.items():
        assert row["ok"] == 4 and row["failed"] == 0, name
        assert row["e2e_p99_ms"] >= row["e2e_p50_ms"] > 0, name
        assert row["output_tokens_per_s"] > 0 and row["peak_memory_mb"] > 0 and row["cpu_seconds"] > 0, name
        assert row["cost_per_1k_requests_usd"] > 0, name
        if name != "torchserve":
            assert row["ttft_p50_ms"] is not None and row["ttft_p50_ms"] <= row["e2e_p50_ms"], name


def test_report_names_the_machine_workload_goals_and_overhead(reduced_run: tuple[dict, str]) -> None:
    report, table = reduced_run
    assert report["workload"]["requests"] == 4 and report["workload"]["output_tokens"] == 4
    assert report["fingerprint"]["cpu_model"] and len(report["load_average_at_start"]) == 3
    assert report["gateway_ttft_overhead"]["pairs"] == 2
    assert set(report["goals"]) >= {"gateway_vs_naive_output_tokens_ratio", "gateway_added_ttft_p50_ms"}
    assert report["fingerprint"]["cpu_model"] in table
    assert table.count("\n| ") == len(FRAMEWORKS) + 1  # header + one line per framework
