"""The DVC-experiment hook on a real, tiny DVC repository (not the full pipeline)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.experiments import ExperimentError, ExperimentRunner
from tests.agent.conftest import dvc_project

PARAMS = """\
# a tiny project: one stage reads these and writes metrics.json
deployments:
  - name: premium
    replicas: {min: 2, max: 6}   # kept by -S edits in the temporary copy only
model:
  width: 4
"""
STAGE = """\
import json

from ruamel.yaml import YAML

params = YAML(typ="safe").load(open("params.yaml"))
replicas = params["deployments"][0]["replicas"]
json.dump({"score": params["model"]["width"] * 10 + replicas["min"], "cost": replicas["max"] * 0.5},
          open("metrics.json", "w"))
"""
DVC_YAML = f"""\
stages:
  measure:
    cmd: {sys.executable} measure.py
    deps:
      - measure.py
    params:
      - model.width
      - deployments
    metrics:
      - metrics.json:
          cache: false
"""


@pytest.fixture
def dvc_repo(tmp_path: Path) -> Path:
    return dvc_project(tmp_path, {"params.yaml": PARAMS, "measure.py": STAGE, "dvc.yaml": DVC_YAML})


def test_missing_point_is_measured_as_an_experiment_and_read_back(dvc_repo: Path) -> None:
    runner = ExperimentRunner(dvc_repo)
    changes = {"model.width": 7, "deployments[premium].replicas.min": 3}
    assert runner.set_args(changes) == [
        "-S",
        "params.yaml:model.width=7",
        "-S",
        "params.yaml:deployments.0.replicas.min=3",
    ]
    result = runner.run(changes)
    assert result.metric("metrics.json", "score") == 73  # 7 * 10 + 3, computed by the stage
    assert result.metric("metrics.json", "cost") == 3.0
    assert result.params["params.yaml"]["deployments"][0]["replicas"] == {"min": 3, "max": 6}
    assert result.name == runner.name_for(changes)
    evidence = result.evidence("batch sweep point")
    assert evidence.kind == "dvc_experiment" and f"dvc exp apply {result.name}" in evidence.detail
    # the workspace is untouched: the experiment ran in a temporary copy
    assert (dvc_repo / "params.yaml").read_text() == PARAMS
    status = subprocess.run(["git", "status", "--porcelain"], cwd=dvc_repo, capture_output=True, text=True)
    assert status.stdout.strip() == ""
    # asking again on the same commit reuses the experiment
    again = runner.run(changes)
    assert again.rev == result.rev
    assert [r.name for r in runner.show()].count(result.name) == 1
    with pytest.raises(ExperimentError, match="has no key 'nope'"):
        result.metric("metrics.json", "nope")


@pytest.mark.slow
def test_queued_experiments_run_together(dvc_repo: Path) -> None:
    runner = ExperimentRunner(dvc_repo)
    names = [runner.queue({"model.width": width}) for width in (8, 9)]
    with pytest.raises(ExperimentError, match="failed, or still queued"):
        runner.results(names)
    runner.run_queued(jobs=1)
    scores = [result.metric("metrics.json", "score") for result in runner.results(names)]
    assert scores == [82, 92]


def test_failing_dvc_reports_its_output(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("a: 1\n")
    runner = ExperimentRunner(tmp_path)
    with pytest.raises(ExperimentError, match="not a git repository"):
        runner.name_for({"a": 2})
