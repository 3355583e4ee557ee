"""The quantization node retries an INT8 ONNX variant refused on accuracy with the settings that usually recover
it (per-channel scales, 4x the calibration texts), as one DVC experiment of the pipeline up to its manifest.

The node's logic runs on crafted manifests whose answer is known (tests/fixtures/manifest.json: int8-static costs
$9.963e-06 per 1k at premium's SLA against int8-dynamic's $1.082e-05, 8% less), with a runner that hands back a
crafted manifest as the experiment's; the last test runs the real `dvc exp run` on a tiny DVC repository whose
manifest stage makes int8-static's decision depend on its `per_channel` setting."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest

from agent.context import AgentContext
from agent.contract import Evidence, NoChange, Outcome, ParamValue, Recommendation, Refusal
from agent.experiments import ExperimentResult, ExperimentRunner
from agent.int8_recovery import recovery_changes
from agent.params_edit import apply_changes
from agent.quantization import evaluate
from infopt.manifest import Decision, Manifest, load_manifest
from infopt.params import Int8OnnxVariant
from infopt.stats import Interval
from tests.agent.conftest import FIXTURE_MANIFEST, ROOT, dvc_project
from tests.agent.test_quantization_experiment import DVC_YAML  # the same one-stage project

RETRY = {"variants[int8-static].per_channel": True, "variants[int8-static].calibration_samples": 512}
TRIED = "variants[int8-static].per_channel=true, variants[int8-static].calibration_samples=512"


def with_static(manifest: Manifest, **update: object) -> Manifest:
    variants = [v.model_copy(update=update) if v.name == "int8-static" else v for v in manifest.variants]
    return manifest.model_copy(update={"variants": variants})


def static_loss(manifest: Manifest, low: float, high: float) -> Manifest:
    """int8-static with a paired loss interval [low, high] against the 1-point budget."""
    decision = manifest.variant("int8-static").decision
    assert decision is not None
    loss = Interval(estimate=(low + high) / 2, low=low, high=high, confidence=0.95)
    return with_static(manifest, decision=Decision(**{**decision.model_dump(), "loss": loss, "within_budget": False}))


class CraftedRunner(ExperimentRunner):
    """Answers every experiment with one crafted manifest and records what it was asked to run."""

    def __init__(self, repo: Path, manifest: Manifest | None) -> None:
        super().__init__(repo)
        self.manifest = manifest
        self.calls: list[tuple[dict[str, ParamValue], str]] = []

    def run_and_read(
        self, changes: Mapping[str, ParamValue], stage: str, path: str, what: str
    ) -> tuple[str, ExperimentResult, Evidence]:
        if self.manifest is None:
            raise AssertionError(f"no experiment was expected; asked for {dict(changes)}")
        self.calls.append((dict(changes), stage))
        result = ExperimentResult(name="agent-crafted01", rev="a" * 40, baseline="b" * 40, params={}, metrics={})
        return self.manifest.model_dump_json(), result, result.evidence(what)


def context_for(tmp_path: Path, manifest: Manifest, runner: CraftedRunner | None) -> AgentContext:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    path = tmp_path / "manifest.json"
    path.write_text(manifest.model_dump_json())
    return AgentContext.load(tmp_path, manifest_path=path, deployments=["textcls-premium"], experiments=runner)


def static_refusal(outcomes: list[Outcome]) -> Refusal:
    (refusal,) = [o for o in outcomes if isinstance(o, Refusal) and o.target.variant == "int8-static"]
    return refusal


def test_recovery_settings_are_the_untried_ones_capped_by_the_train_split() -> None:
    params = AgentContext.load(ROOT, manifest_path=FIXTURE_MANIFEST).params  # data.max_train 16000
    static = Int8OnnxVariant(name="s", calibration="static", per_channel=False, calibration_samples=128)
    assert recovery_changes(static, params) == {"variants[s].per_channel": True, "variants[s].calibration_samples": 512}
    small = params.model_copy(update={"data": params.data.model_copy(update={"max_train": 300})})
    assert recovery_changes(static, small)["variants[s].calibration_samples"] == 300  # the whole train split
    tried = Int8OnnxVariant(name="s", calibration="static", per_channel=True, calibration_samples=300)
    assert recovery_changes(tried, small) == {}  # nothing left: per-channel already, every train text already
    assert recovery_changes(Int8OnnxVariant(name="d", calibration="dynamic", per_channel=True), params) == {}


def test_a_per_tensor_variant_over_budget_rebuilt_per_channel_within_budget_is_recommended(tmp_path: Path) -> None:
    fixture = load_manifest(FIXTURE_MANIFEST)
    runner = CraftedRunner(tmp_path, fixture)  # the rebuilt int8-static: the fixture's [+0.23, +0.93] points
    context = context_for(tmp_path, static_loss(fixture, 0.006, 0.014), runner)
    outcomes = evaluate(context, "textcls-premium")
    recommendation = outcomes[0]
    assert isinstance(recommendation, Recommendation), recommendation
    assert runner.calls == [(RETRY, "manifest")]  # one experiment of the pipeline up to its manifest
    assert [(c.path, c.old, c.new) for c in recommendation.changes] == [
        ("variants[int8-static].per_channel", False, True),
        ("variants[int8-static].calibration_samples", 128, 512),
        ("deployments[textcls-premium].variant", "int8-dynamic", "int8-static"),
    ]
    assert "[+0.60, +1.40] points" in recommendation.changes[0].why  # as configured
    assert "[+0.23, +0.93] points" in recommendation.changes[0].why  # rebuilt
    assert recommendation.manifest_experiment == "agent-crafted01"
    assert (recommendation.evidence[0].kind, recommendation.evidence[0].ref) == ("dvc_experiment", "agent-crafted01")
    assert recommendation.accuracy is not None and recommendation.accuracy.decision == "within_budget"
    assert recommendation.accuracy.source.startswith("experiment agent-crafted01: artifacts/manifest.json")
    cost = next(m for m in recommendation.metrics if m.name == "cost per 1k requests at the SLA")
    assert (cost.before, cost.after) == (pytest.approx(1.082e-05), pytest.approx(9.963e-06))
    assert not [o for o in outcomes if isinstance(o, Refusal) and o.target.variant == "int8-static"]
    assert "agent-crafted01" in context.experiment_manifests  # the infra plan deploys the rebuilt manifest
    edit = apply_changes(context.params_text, recommendation.changes)  # the edit applies and validates
    assert "+  per_channel: true" in edit.diff and "+  calibration_samples: 512" in edit.diff


def test_a_rebuilt_variant_still_over_budget_is_refused_naming_settings_experiment_and_interval(
    tmp_path: Path,
) -> None:
    fixture = load_manifest(FIXTURE_MANIFEST)
    runner = CraftedRunner(tmp_path, static_loss(fixture, 0.004, 0.012))
    outcomes = evaluate(context_for(tmp_path, static_loss(fixture, 0.006, 0.014), runner), "textcls-premium")
    assert isinstance(outcomes[0], NoChange)
    refusal = static_refusal(outcomes)
    assert refusal.guardrail == "accuracy"
    assert f"rebuilt with {TRIED} in DVC experiment agent-crafted01, it still fails" in refusal.reason
    as_configured, rebuilt = refusal.reason.split("rebuilt with")
    assert "[+0.60, +1.40] points, budget 1.00 points" in as_configured
    assert "[+0.40, +1.20] points, budget 1.00 points" in rebuilt
    assert [e.ref for e in refusal.evidence if e.kind == "dvc_experiment"] == ["agent-crafted01"]


def test_without_experiments_the_refusal_says_what_measure_missing_would_try(tmp_path: Path) -> None:
    fixture = load_manifest(FIXTURE_MANIFEST)
    outcomes = evaluate(context_for(tmp_path, static_loss(fixture, 0.006, 0.014), None), "textcls-premium")
    assert isinstance(outcomes[0], NoChange)
    refusal = static_refusal(outcomes)
    assert refusal.guardrail == "accuracy"
    assert f"`infopt agent propose --measure-missing` would rebuild it with {TRIED}" in refusal.reason


def test_a_variant_refused_on_cost_is_not_retried(tmp_path: Path) -> None:
    fixture = load_manifest(FIXTURE_MANIFEST)
    dearer = with_static(fixture, sweeps=fixture.variant("fp32").sweeps)  # within budget, fp32's cost
    runner = CraftedRunner(tmp_path, None)  # any experiment fails the test
    outcomes = evaluate(context_for(tmp_path, dearer, runner), "textcls-premium")
    assert isinstance(outcomes[0], NoChange) and runner.calls == []
    refusal = static_refusal(outcomes)
    assert "does not lower the cost per 1k" in refusal.reason
    assert "not retried with other INT8 settings" in refusal.reason


STAGE = """\
import json
from pathlib import Path

from ruamel.yaml import YAML

variants = {v["name"]: v for v in YAML(typ="safe").load(open("params.yaml"))["variants"]}
manifest = json.loads(Path("full_manifest.json").read_text())
for entry in manifest["variants"]:
    if entry["name"] == "int8-static" and not variants["int8-static"].get("per_channel", True):  # per tensor
        entry["decision"]["loss"].update(estimate=0.01, low=0.006, high=0.014)
        entry["decision"]["within_budget"] = False
Path("artifacts").mkdir(exist_ok=True)
Path("artifacts/manifest.json").write_text(json.dumps(manifest))
"""


def test_the_retry_is_a_real_dvc_experiment_setting_the_variants_params(tmp_path: Path) -> None:
    project = dvc_project(
        tmp_path,
        {
            "params.yaml": (ROOT / "params.yaml").read_text(),  # int8-static: static, per tensor, 128 texts
            "full_manifest.json": FIXTURE_MANIFEST.read_text(),
            "manifest_stage.py": STAGE,
            "dvc.yaml": DVC_YAML,
        },
    )
    runner = ExperimentRunner(project)
    outcome = evaluate(AgentContext.load(project, experiments=runner), "textcls-premium")[0]
    assert isinstance(outcome, Recommendation), outcome
    assert [c.path for c in outcome.changes][:2] == list(RETRY)
    experiment = outcome.manifest_experiment
    assert experiment is not None and outcome.evidence[0].ref == experiment
    assert (
        "-S params.yaml:variants.3.per_channel=true -S params.yaml:variants.3.calibration_samples=512 manifest"
        in outcome.evidence[0].detail
    )
    result = runner.find(experiment)  # `dvc exp show` lists it, with the settings it ran
    assert result is not None
    static = result.params["params.yaml"]["variants"][3]
    assert (static["name"], static["per_channel"], static["calibration_samples"]) == ("int8-static", True, 512)
    built = json.loads(runner.read(result, "artifacts/manifest.json"))
    assert next(v for v in built["variants"] if v["name"] == "int8-static")["decision"]["within_budget"] is True
