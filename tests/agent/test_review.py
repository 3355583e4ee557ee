"""The review side: `dvc metrics diff` and the infra plan diff of a params change, posted as one sticky comment."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from agent.github import GitHubClient
from agent.review import REVIEW_MARKER, review_report
from tests.agent.conftest import FIXTURE_MANIFEST, OWNER_REPO, GitHubServer, Repo, git


def test_review_report_has_the_metrics_diff_and_the_plan_diff(repo: Repo) -> None:
    work = repo.work
    subprocess.run(["dvc", "init", "-q"], cwd=work, check=True)
    (work / "dvc.yaml").write_text(
        "stages:\n  measure:\n    cmd: echo measured\n    metrics:\n      - metrics.json:\n          cache: false\n"
    )
    (work / "metrics.json").write_text(json.dumps({"p99_ms": 10.0}))
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "metrics")
    (work / "metrics.json").write_text(json.dumps({"p99_ms": 8.5}))
    params = work / "params.yaml"
    text = params.read_text()
    assert text.count("    min: 2\n    max: 6\n") == 1
    params.write_text(text.replace("    min: 2\n    max: 6\n", "    min: 3\n    max: 6\n"))

    report = review_report(work, "HEAD", stack="prod", manifest_path=FIXTURE_MANIFEST)
    assert report.startswith(REVIEW_MARKER)
    metrics = report.split("### `dvc metrics diff`")[1].split("### Infra plan diff")[0]
    assert re.search(r"\| metrics.json \| p99_ms +\| 10.0 +\| 8.5 +\| -1.5 +\|", metrics), metrics
    assert "| HorizontalPodAutoscaler inference-acme/textcls-premium | changed | `spec.minReplicas` | 2 | 3 |" in report


def test_sticky_review_comment_is_updated_not_duplicated(repo: Repo, github_server: GitHubServer) -> None:
    git(repo.work, "push", "-q", "origin", "main:refs/heads/feature")
    github = GitHubClient(OWNER_REPO, github_server.token, api_url=github_server.url)
    number = github.create_pull(title="tune", head="feature", base="main", body="a params change")["number"]
    first = github.upsert_comment(number, f"{REVIEW_MARKER}\nfirst report", REVIEW_MARKER)
    second = github.upsert_comment(number, f"{REVIEW_MARKER}\nsecond report", REVIEW_MARKER)
    assert first["id"] == second["id"]
    (comment,) = github.list_comments(number)
    assert comment["body"].endswith("second report")


def test_review_report_says_when_the_plan_cannot_be_made(repo: Repo, tmp_path: Path) -> None:
    report = review_report(repo.work, "HEAD", stack="prod", manifest_path=tmp_path / "missing.json", dvc="false")
    assert "`dvc metrics diff HEAD` failed (1)" in report
    assert "The plan could not be made: ManifestError" in report
