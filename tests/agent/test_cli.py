"""`infopt agent propose` end to end: dry run, then --open-pr twice against a local bare remote and the local
GitHub server (one branch, one PR, the second run updates nothing)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.agent.conftest import FIXTURE_MANIFEST, OWNER_REPO, GitHubServer, Repo, git

pytestmark = pytest.mark.slow


def write_trace(path: Path) -> Path:
    # premium traffic whose 95th percentile step needs 3 replicas of the fixture's int8-dynamic at the SLA
    steps = [3000.0, 4200.0, 5200.0, 4800.0] * 5
    with path.open("w") as handle:
        for index, rate in enumerate(steps):
            handle.write(json.dumps({"t": 60 * index, "sla_class": "premium", "rps": rate}) + "\n")
    return path


def agent(repo: Repo, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["infopt", "agent", "propose", "--manifest", str(FIXTURE_MANIFEST), "--deployment", "textcls-premium", *args],
        cwd=repo.work,
        env={**os.environ, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_propose_dry_run_then_open_pr_twice_gives_one_pr(
    repo: Repo, github_server: GitHubServer, tmp_path: Path
) -> None:
    trace = write_trace(tmp_path / "trace.jsonl")
    no_token = {"GITHUB_TOKEN": "", "GH_TOKEN": ""}
    dry = agent(repo, "--trace", str(trace), "--node", "scaling", env=no_token)
    assert dry.returncode == 0, dry.stderr + dry.stdout
    assert "dry run: nothing committed or pushed" in dry.stdout
    body = repo.work / "plan" / "agent" / "agent-scaling-textcls-premium.md"
    assert "### Infra plan diff" in body.read_text()
    assert repo.remote_branch("agent/scaling-textcls-premium") is None

    env = {"GITHUB_TOKEN": github_server.token, "GITHUB_API_URL": github_server.url}
    first = agent(repo, "--trace", str(trace), "--node", "scaling", "--open-pr", "--repo", OWNER_REPO, env=env)
    assert first.returncode == 0, first.stderr + first.stdout
    assert "opened #1" in first.stdout
    second = agent(repo, "--trace", str(trace), "--node", "scaling", "--open-pr", "--repo", OWNER_REPO, env=env)
    assert second.returncode == 0, second.stderr + second.stdout
    assert "branch already up to date" in second.stdout and "#1 unchanged" in second.stdout
    (pull,) = github_server.state.pulls[OWNER_REPO]
    assert pull["head"] == "agent/scaling-textcls-premium" and pull["base"] == "main"
    head = repo.remote_branch("agent/scaling-textcls-premium")
    assert head is not None and repo.remote_changed_files(repo.remote_branch("main") or "", head) == ["params.yaml"]
    assert "-    min: 2" in pull["body"]
    assert github_server.token not in first.stdout + first.stderr + second.stdout + second.stderr
    assert git(repo.work, "status", "--porcelain") == "?? plan/"  # only the PR body folder (git-ignored in the project)


def test_propose_runs_every_node_and_proposes_the_first_that_passes(repo: Repo) -> None:
    done = agent(repo, "--no-plan", env={"GITHUB_TOKEN": "", "GH_TOKEN": ""})
    assert done.returncode == 0, done.stderr + done.stdout
    out = done.stdout
    # batching first: every measured batch of the fixture's int8-dynamic meets premium at max_wait_ms 2
    assert "recommend batching textcls-premium (int8-dynamic): max_batch_size 8 -> 64" in out
    assert "batch 16: 2,976 req/s, p99 10.6 ms, $8.96e-06/1k (meets premium p99 50 ms)" in out
    assert "recommend quantization textcls-premium (int8-static)" in out
    assert "refused quantization textcls-premium (pruned-heads-25) (accuracy): pruned-heads-25 is over budget" in out
    assert "refused profiler textcls-premium (evidence)" in out and "no profile" in out  # no metrics/ in the repo
    assert "refused scaling textcls-premium (evidence): no traffic source" in out
    # the first recommendation that passes (here without the infra plan: policy n/a) is the one proposal
    assert "agent: Batching of textcls-premium: max_batch_size 8 -> 64  (branch agent/batching-textcls-premium" in out
    assert "-    max_batch_size: 8\n+    max_batch_size: 64" in out
    body = (repo.work / "plan" / "agent" / "agent-batching-textcls-premium.md").read_text()
    assert "| policy | n/a | infra plan skipped (--no-plan) |" in body
    assert "- batch 64: 3,999 req/s, p99 27.6 ms, $6.67e-06/1k (meets premium p99 50 ms)" in body
    assert "dry run: nothing committed or pushed" in out
    with_unknown = agent(repo, "--node", "nope", env={})
    assert with_unknown.returncode == 2 and "unknown node(s) ['nope']" in with_unknown.stdout
