"""The reduced ladder end to end on a tiny workspace (CPU): the result file's schema and its internal
consistency, not speed. The real gateway runs as child processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from challenge.gateway import LIGHT_LOAD_CONNECTIONS, OVERLOADED_FRACTION
from challenge.ladder import STEPS
from challenge.report import LadderResult
from infopt.params import load_params

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


@pytest.fixture(scope="module")
def ladder(ladder_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[LadderResult, Path, Path]:
    out = tmp_path_factory.mktemp("ladder-out")
    completed = subprocess.run(
        [sys.executable, "-m", "challenge", "--device", "cpu", "--reduced", "--out", str(out)],
        cwd=ladder_workspace,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    raw = json.loads((out / "ladder.json").read_text())
    return LadderResult.model_validate(raw), out, ladder_workspace


def test_result_names_every_step_in_order_and_is_complete(ladder: tuple[LadderResult, Path, Path]) -> None:
    result, out, _ = ladder
    assert result.status == "complete" and result.device == "cpu" and result.reduced
    assert [step.key for step in result.steps] == list(STEPS)
    assert [step.index for step in result.steps] == [1, 2, 3, 4, 5, 6]
    assert all(step.carried is not None for step in result.steps)
    assert {"load_average_start", "load_average_end", "git_sha"} <= set(result.fingerprint)
    markdown = (out / "ladder.md").read_text()
    for step in result.steps:
        assert f"| {step.index}. {step.key} |" in markdown


def test_step_one_is_the_fp32_batch_1_baseline(ladder: tuple[LadderResult, Path, Path]) -> None:
    result, _, _ = ladder
    first = result.steps[0]
    assert first.carried is not None and first.carried.point.batch_size == 1
    assert first.carried.engine["precision"] == "fp32" and first.carried.engine["family"] == "hf"
    assert first.carried.throughput_gain == 1.0 and first.carried.cost_gain == 1.0
    assert first.carried.accuracy.decision is None


def test_every_measured_candidate_has_accuracy_decision_and_priced_throughput(
    ladder: tuple[LadderResult, Path, Path],
) -> None:
    result, _, workspace = ladder
    params = load_params(workspace / "params.yaml")
    rate = params.cost.hourly_usd["cpu"]
    measured = [c for step in result.steps for c in step.candidates if c.status == "measured"]
    assert len(measured) >= 6
    baseline_engine = result.steps[0].candidates[0].engine
    for candidate in measured:
        assert candidate.accuracy is not None and candidate.point is not None, candidate.name
        assert candidate.accuracy.n == result.context["test_examples"] == 12
        decision = candidate.accuracy.decision
        if candidate.engine == baseline_engine:  # step 1's configuration (e.g. batched in step 3): no decision
            assert decision is None
        else:  # every other configuration is decided against step 1, on the same examples
            assert decision is not None and decision.budget == params.evaluate.max_accuracy_loss
        point = candidate.point
        assert point.cost_per_1k_usd == pytest.approx(rate / 3600 / point.throughput_rps * 1000)
        assert point.latency_p50_ms <= point.latency_p99_ms_max


def test_the_ladder_only_keeps_faster_candidates_within_the_decision(ladder: tuple[LadderResult, Path, Path]) -> None:
    result, _, _ = ladder
    previous = None
    for step in result.steps[2:]:
        carried = step.carried
        assert carried is not None
        if previous is not None:
            assert carried.point.throughput_rps >= previous
        previous = carried.point.throughput_rps
        kept = [c for c in step.candidates if c.kept]
        assert len(kept) <= 1
        if kept:
            (candidate,) = kept
            assert step.kept == candidate.name and carried.point == candidate.point
            decision = candidate.accuracy.decision  # type: ignore[union-attr]
            if decision is None:  # only step 1's own configuration (batched in step 3) has no decision
                assert candidate.engine == result.steps[0].candidates[0].engine
            else:
                assert decision.within_budget
            plan = candidate.sla_plan
            assert plan is not None and plan["batch_size"] == candidate.point.batch_size  # type: ignore[union-attr]
            assert candidate.point.predicted_request_p99_ms == pytest.approx(  # type: ignore[union-attr]
                result.context["max_wait_ms"] + candidate.point.latency_p99_ms_max  # type: ignore[union-attr]
            )
            base = result.steps[0].carried.point.throughput_rps  # type: ignore[union-attr]
            assert carried.throughput_gain == pytest.approx(carried.point.throughput_rps / base)


def test_roofline_is_against_the_matmul_rate_measured_in_the_run(ladder: tuple[LadderResult, Path, Path]) -> None:
    result, _, _ = ladder
    ceiling = result.roofline["fp32_matmul"]
    assert ceiling.flops_per_s == pytest.approx(2 * ceiling.n**3 / (ceiling.median_ms / 1000))
    for step in result.steps:
        roofline = step.carried.roofline  # type: ignore[union-attr]
        assert roofline is not None and roofline.ceiling_flops_per_s == ceiling.flops_per_s
        throughput = step.carried.point.throughput_rps  # type: ignore[union-attr]
        assert roofline.achieved_flops_per_s == pytest.approx(throughput * roofline.flops_per_request)
        assert roofline.fraction == pytest.approx(roofline.achieved_flops_per_s / ceiling.flops_per_s)


def test_gateway_numbers_come_from_real_gateway_runs(ladder: tuple[LadderResult, Path, Path]) -> None:
    result, _, _ = ladder
    runs = [step for step in result.steps if step.gateway is not None]
    assert runs, result.skipped
    for step in runs:
        run = step.gateway
        assert run is not None and run.levels and run.processes == 1
        connections = [level.connections for level in run.levels] + run.not_run
        assert connections == sorted(connections) and connections[0] == LIGHT_LOAD_CONNECTIONS
        light = run.levels[0].client  # the light-load level: answered on any host
        assert light.ok > 0 and light.latency_p99_ms is not None
        for index, level in enumerate(run.levels):
            client = level.client
            answered = client.ok + client.status_429 + client.status_503 + client.expired + client.errors
            expected = (answered - client.ok) / answered if answered else 1.0
            assert level.failed_fraction == pytest.approx(expected)
            if index < len(run.levels) - 1:  # only the last level run may be overloaded (then the rest is not run)
                assert level.failed_fraction <= OVERLOADED_FRACTION
        if run.not_run:
            assert run.levels[-1].failed_fraction > OVERLOADED_FRACTION
        assert run.chosen is not None and run.levels[run.chosen].client.ok > 0
        assert step.carried.gateway_throughput_rps == run.levels[run.chosen].client.throughput_rps  # type: ignore[union-attr]


def test_cpu_run_says_what_it_skipped_and_which_targets_it_could_not_measure(
    ladder: tuple[LadderResult, Path, Path],
) -> None:
    result, _, _ = ladder
    skipped = {item["what"] for item in result.skipped}
    assert {"TF32", "CUDA graphs (CPU)", "torch.compile (CPU)", "FP8 (CPU)"} <= skipped
    targets = {target.name: target for target in result.targets}
    assert set(targets) == {
        "throughput_200x",
        "cost_1_200",
        "premium_p99_gateway",
        "gateway_80pct",
        "dense_roofline_70",
        "fp8_above_bf16_roofline",
    }
    assert targets["fp8_above_bf16_roofline"].met is None and targets["fp8_above_bf16_roofline"].value is None


def test_dashboard_shows_the_ladder_numbers_as_in_its_file(
    ladder: tuple[LadderResult, Path, Path], tmp_path: Path
) -> None:
    """The ladder path of the dashboard on a real ladder.json: every tagged number equals the file, in Chromium."""
    from dashboard.build import build
    from dashboard.sources import LADDERS, resolve
    from tests.dashboard.test_dashboard import _open

    _, out, _ = ladder
    root = tmp_path / "repo"
    relative = f"{LADDERS}/cpu-reduced/ladder.json"
    (root / relative).parent.mkdir(parents=True)
    shutil.copy(out / "ladder.json", root / relative)
    page_path = build(root, tmp_path / "dashboard")
    seen = _open(page_path)
    images = seen["images"]
    assert images and all(complete and width > 0 for _, complete, width, _ in images)  # type: ignore[union-attr]
    cells = [cell for cell in seen["cells"] if cell[0] == relative]  # type: ignore[union-attr]
    data = json.loads((root / relative).read_text())
    pointers = {cell[1] for cell in cells}
    assert {f"/steps/{s}/carried/point/throughput_rps" for s in range(len(STEPS))} <= pointers
    for _, pointer, fmt, value, text in cells:
        expected = resolve(data, pointer)
        assert float(value) == expected and text == format(expected, fmt), pointer
    assert data["fingerprint"]["git_sha"][:10] in str(seen["text"])
