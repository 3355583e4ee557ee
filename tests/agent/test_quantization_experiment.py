"""The quantization node builds what params.yaml disables, the DVC way: on a real, tiny DVC repository whose
`manifest` stage writes artifacts/manifest.json (a cached output, as in the pipeline) holding the enabled
variants of a known manifest (tests/fixtures/manifest.json, where int8-static is the cheapest non-inferior
variant for both deployments), so the answer is known."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agent.context import AgentContext
from agent.contract import NoChange, Recommendation, Refusal
from agent.experiments import ExperimentRunner
from agent.proposal import Proposal, build_proposal
from agent.quantization import evaluate
from tests.agent.conftest import dvc_project

ROOT = Path(__file__).resolve().parents[2]
STAGE = """\
import json
from pathlib import Path

from ruamel.yaml import YAML

enabled = {v["name"] for v in YAML(typ="safe").load(open("params.yaml"))["variants"] if v.get("enabled", True)}
manifest = json.loads(Path("full_manifest.json").read_text())
manifest["variants"] = [v for v in manifest["variants"] if v["name"] in enabled]
Path("artifacts").mkdir(exist_ok=True)
Path("artifacts/manifest.json").write_text(json.dumps(manifest))
"""
DVC_YAML = f"""\
stages:
  manifest:
    cmd: {sys.executable} manifest_stage.py
    deps:
      - manifest_stage.py
      - full_manifest.json
    params:
      - variants
    outs:
      - artifacts/manifest.json
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    params = (ROOT / "params.yaml").read_text()
    disabled = params.replace("- name: int8-static\n", "- name: int8-static\n  enabled: false\n", 1)
    assert disabled != params
    return dvc_project(
        tmp_path,
        {
            "params.yaml": disabled,
            "full_manifest.json": (ROOT / "tests" / "fixtures" / "manifest.json").read_text(),
            "manifest_stage.py": STAGE,
            "dvc.yaml": DVC_YAML,
        },
    )


def test_without_experiments_a_disabled_variant_is_named_not_guessed(project: Path) -> None:
    outcomes = evaluate(AgentContext.load(project), "textcls-premium")
    assert isinstance(outcomes[0], NoChange)  # int8-static is not in the pipeline's manifest
    (refusal,) = [o for o in outcomes if isinstance(o, Refusal) and "disabled" in o.reason]
    assert refusal.guardrail == "evidence"
    assert "['int8-static'] are disabled in params.yaml" in refusal.reason and "--measure-missing" in refusal.reason


def test_a_disabled_variant_is_built_as_an_experiment_and_proposed_from_it(project: Path) -> None:
    runner = ExperimentRunner(project)
    context = AgentContext.load(project, experiments=runner)
    params_before = (project / "params.yaml").read_text()
    outcome = evaluate(context, "textcls-premium")[0]
    assert isinstance(outcome, Recommendation), outcome
    assert [(c.path, c.old, c.new) for c in outcome.changes] == [
        ("variants[int8-static].enabled", False, True),
        ("deployments[textcls-premium].variant", "int8-dynamic", "int8-static"),
    ]
    experiment = outcome.manifest_experiment
    assert experiment is not None and outcome.evidence[0].kind == "dvc_experiment"
    assert outcome.evidence[0].ref == experiment
    assert "params.yaml:variants.3.enabled=true manifest" in outcome.evidence[0].detail
    assert outcome.accuracy is not None and outcome.accuracy.decision == "within_budget"
    assert f"experiment {experiment}: artifacts/manifest.json" in outcome.accuracy.source
    # the manifest came out of DVC's cache (a cached output is not in the experiment's commit)
    result = runner.find(experiment)
    assert result is not None
    built = json.loads(runner.read(result, "artifacts/manifest.json"))
    assert "int8-static" in [v["name"] for v in built["variants"]]
    assert (project / "params.yaml").read_text() == params_before  # the workspace is untouched
    # the proposal passes every guardrail; its infra plan deploys the experiment's manifest on the after side
    proposal = build_proposal(context, outcome, stack="dev", stacks_dir=ROOT / "stacks")
    assert isinstance(proposal, Proposal), proposal
    assert {check["guardrail"]: check["result"] for check in proposal.checks}["policy"] == "pass"
    assert "| /models/int8-dynamic | /models/int8-static |" in proposal.body  # the pods load the new artifact
    assert "-  enabled: false" in proposal.diff and "+  enabled: true" in proposal.diff
    assert "+  variant: int8-static" in proposal.diff
    # asking again on the same commit (a later agent run: a new runner) reuses the experiment by name
    again = evaluate(AgentContext.load(project, experiments=ExperimentRunner(project)), "textcls-premium")[0]
    assert isinstance(again, Recommendation) and again.manifest_experiment == experiment
    assert [r.name for r in runner.show()].count(experiment) == 1


def test_both_deployments_share_one_experiment_read_once(project: Path) -> None:
    runner = ExperimentRunner(project)
    context = AgentContext.load(project, experiments=runner)
    premium, shared = (evaluate(context, name)[0] for name in ("textcls-premium", "textcls-shared"))
    assert isinstance(premium, Recommendation) and isinstance(shared, Recommendation)
    assert premium.manifest_experiment == shared.manifest_experiment is not None
    assert len(runner._read) == 1  # the second deployment did not list or read the experiment again
    assert [r.name for r in runner.show()].count(premium.manifest_experiment) == 1
