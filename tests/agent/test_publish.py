"""Branches and pull requests, for real: a git repository with a bare remote and the local GitHub server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.context import AgentContext
from agent.contract import ParamChange, Recommendation, Target
from agent.github import GitHubAuthError, GitHubClient, GitHubRateLimited, PullRequestExists
from agent.proposal import Proposal, build_proposal, marker_of
from agent.publish import PublishError, publish
from tests.agent.conftest import FIXTURE_MANIFEST, OWNER_REPO, GitHubServer, Repo, git


def recommendation(new_min: int) -> Recommendation:
    return Recommendation(
        node="scaling",
        topic="scaling",
        title=f"Scale textcls-premium: replicas.min 2 -> {new_min}",
        summary=f"{new_min} replicas serve 95% of the trace.",
        target=Target(deployment="textcls-premium", sla_class="premium"),
        changes=[ParamChange(path="deployments[textcls-premium].replicas.min", old=2, new=new_min)],
    )


def proposal_for(repo: Repo, new_min: int) -> Proposal:
    context = AgentContext.load(repo.work, manifest_path=FIXTURE_MANIFEST)
    built = build_proposal(context, recommendation(new_min), plan=False)
    assert isinstance(built, Proposal), built
    return built


def client(server: GitHubServer, **options: Any) -> GitHubClient:
    return GitHubClient(OWNER_REPO, server.token, api_url=server.url, **options)


def pulls(server: GitHubServer) -> list[dict[str, Any]]:
    return server.state.pulls.get(OWNER_REPO, [])


def comments(server: GitHubServer) -> list[dict[str, Any]]:
    return server.state.comments.get(OWNER_REPO, [])


def test_open_pr_pushes_a_branch_that_changes_only_params_and_opens_one_pr(
    repo: Repo, github_server: GitHubServer, tmp_path: Path
) -> None:
    proposal = proposal_for(repo, 3)
    result = publish(
        proposal,
        repo=repo.work,
        remote="origin",
        base="main",
        body_path=tmp_path / "body.md",
        github=client(github_server),
    )
    assert result.action == "created" and result.pushed
    assert proposal.branch == "agent/scaling-textcls-premium"
    head = repo.remote_branch(proposal.branch)
    main = repo.remote_branch("main")
    assert head == result.commit and main is not None
    assert repo.remote_changed_files(main, head) == ["params.yaml"]
    assert repo.remote_file(head, "params.yaml") == proposal.params_after
    assert git(repo.work, "status", "--porcelain") == ""  # the user's checkout is untouched
    assert git(repo.work, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    (pull,) = pulls(github_server)
    assert (pull["head"], pull["base"], pull["state"]) == (proposal.branch, "main", "open")
    assert marker_of(pull["body"]) == (proposal.id, proposal.branch)
    assert (tmp_path / "body.md").read_text() == proposal.body
    assert all(header == f"Bearer {github_server.token}" for header in github_server.state.auth_headers)
    assert github_server.token not in " ".join(result.messages) + proposal.body


def test_rerun_on_the_same_evidence_pushes_nothing_and_keeps_one_pr(
    repo: Repo, github_server: GitHubServer, tmp_path: Path
) -> None:
    first = publish(
        proposal_for(repo, 3),
        repo=repo.work,
        remote="origin",
        base="main",
        body_path=tmp_path / "a.md",
        github=client(github_server),
    )
    second = publish(
        proposal_for(repo, 3),
        repo=repo.work,
        remote="origin",
        base="main",
        body_path=tmp_path / "b.md",
        github=client(github_server),
    )
    assert (second.action, second.pushed, second.commit) == ("unchanged", False, first.commit)
    assert second.pr_number == first.pr_number
    assert len(pulls(github_server)) == 1
    assert comments(github_server) == []
    assert not any(method == "PATCH" for method, _, _ in github_server.state.requests)


def test_newer_proposal_supersedes_the_older_one_on_the_same_pr(
    repo: Repo, github_server: GitHubServer, tmp_path: Path
) -> None:
    old, new = proposal_for(repo, 3), proposal_for(repo, 4)
    assert old.branch == new.branch and old.id != new.id
    first = publish(
        old, repo=repo.work, remote="origin", base="main", body_path=tmp_path / "a.md", github=client(github_server)
    )
    second = publish(
        new, repo=repo.work, remote="origin", base="main", body_path=tmp_path / "b.md", github=client(github_server)
    )
    assert second.pushed and second.action == "updated" and second.superseded == old.id
    assert second.pr_number == first.pr_number
    (pull,) = pulls(github_server)
    assert marker_of(pull["body"]) == (new.id, new.branch)
    (comment,) = comments(github_server)
    assert f"proposal `{new.id}` replaces `{old.id}`" in comment["body"]
    assert "replicas.min` 2 -> 4" in comment["body"]
    assert repo.remote_file(repo.remote_branch(new.branch) or "", "params.yaml") == new.params_after


def test_without_a_token_the_branch_is_pushed_and_the_body_written(
    repo: Repo, github_server: GitHubServer, tmp_path: Path
) -> None:
    proposal = proposal_for(repo, 3)
    result = publish(proposal, repo=repo.work, remote="origin", base="main", body_path=tmp_path / "pr.md", github=None)
    assert result.action == "no_token" and result.pr_number is None
    assert repo.remote_branch(proposal.branch) == result.commit
    assert (tmp_path / "pr.md").read_text() == proposal.body
    assert "no GitHub token (GITHUB_TOKEN): no pull request was opened" in result.messages[-1]
    assert github_server.state.requests == []


def test_a_stale_base_is_refused_before_anything_is_pushed(repo: Repo, tmp_path: Path) -> None:
    proposal = proposal_for(repo, 3)
    params = repo.work / "params.yaml"
    params.write_text(params.read_text().replace("seed: 1234", "seed: 99"))
    git(repo.work, "commit", "-q", "-am", "someone changed params")
    git(repo.work, "push", "-q", "origin", "main")
    with pytest.raises(PublishError, match="differs from the one this proposal was made from"):
        publish(proposal, repo=repo.work, remote="origin", base="main", body_path=tmp_path / "b.md", github=None)
    assert repo.remote_branch(proposal.branch) is None


def test_a_proposal_the_reviewer_closed_is_not_reopened(
    repo: Repo, github_server: GitHubServer, tmp_path: Path
) -> None:
    proposal = proposal_for(repo, 3)
    github = client(github_server)
    first = publish(proposal, repo=repo.work, remote="origin", base="main", body_path=tmp_path / "a.md", github=github)
    assert first.pr_number is not None
    github.update_pull(first.pr_number, state="closed")
    again = publish(proposal, repo=repo.work, remote="origin", base="main", body_path=tmp_path / "b.md", github=github)
    assert again.action == "declined_before" and again.pr_number == first.pr_number
    assert len(pulls(github_server)) == 1


def test_a_concurrent_pr_422_falls_back_to_updating_it(repo: Repo, github_server: GitHubServer, tmp_path: Path) -> None:
    proposal = proposal_for(repo, 3)

    class RacingClient(GitHubClient):
        """Another run opens the PR between this run's listing and its create call."""

        raced = False

        def list_pulls(self, head_branch: str, *, state: str = "open") -> list[dict[str, Any]]:
            if state == "open" and not self.raced:
                self.raced = True
                GitHubClient.create_pull(self, title="opened by another run", head=head_branch, base="main", body="x")
                return []
            return super().list_pulls(head_branch, state=state)

    github = RacingClient(OWNER_REPO, github_server.token, api_url=github_server.url)
    result = publish(proposal, repo=repo.work, remote="origin", base="main", body_path=tmp_path / "a.md", github=github)
    assert result.action == "updated"
    (pull,) = pulls(github_server)
    assert pull["title"] == proposal.title and marker_of(pull["body"]) == (proposal.id, proposal.branch)
    with pytest.raises(
        PullRequestExists, match="A pull request already exists for acme-ml:agent/scaling-textcls-premium"
    ):
        github.create_pull(title="t", head=proposal.branch, base="main", body="b")


def test_a_bad_token_is_refused_without_leaking_it(repo: Repo, github_server: GitHubServer) -> None:
    secret = "ghp_this_is_not_valid_0123456789"
    github = GitHubClient(OWNER_REPO, secret, api_url=github_server.url)
    with pytest.raises(GitHubAuthError) as caught:
        github.list_pulls("agent/x")
    assert caught.value.status == 401
    assert "401 Bad credentials" in str(caught.value)
    assert secret not in str(caught.value) and secret not in repr(github)


def test_rate_limits_are_waited_out_and_retried(repo: Repo, github_server: GitHubServer, tmp_path: Path) -> None:
    now = 1_800_000_000.0
    github_server.state.fail_next(
        403,
        "API rate limit exceeded for user ID 1.",
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now) + 42)},
    )
    github_server.state.fail_next(
        429,
        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        {"retry-after": "7"},
    )
    slept: list[float] = []
    github = client(github_server, sleep=slept.append, clock=lambda: now)
    result = publish(
        proposal_for(repo, 3), repo=repo.work, remote="origin", base="main", body_path=tmp_path / "a.md", github=github
    )
    assert result.action == "created"
    assert slept == [42.0, 7.0] == github.waits
    assert len(pulls(github_server)) == 1


def test_a_rate_limit_past_the_wait_budget_says_when_to_retry(github_server: GitHubServer) -> None:
    now = 1_800_000_000.0
    github_server.state.fail_next(
        403,
        "API rate limit exceeded for user ID 1.",
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now) + 3000)},
    )
    slept: list[float] = []
    github = client(github_server, sleep=slept.append, clock=lambda: now, max_wait_s=120)
    with pytest.raises(GitHubRateLimited, match="retry in 3000 s") as caught:
        github.list_pulls("agent/x")
    assert caught.value.wait_s == 3000 and slept == []


def test_a_plain_403_is_a_permission_error_not_retried(github_server: GitHubServer) -> None:
    github_server.state.fail_next(403, "Resource not accessible by integration", {})
    slept: list[float] = []
    github = client(github_server, sleep=slept.append)
    with pytest.raises(Exception, match="HTTP 403 Resource not accessible by integration") as caught:
        github.list_pulls("agent/x")
    assert not isinstance(caught.value, GitHubRateLimited) and slept == []


def test_server_answers_with_githubs_shapes(repo: Repo, github_server: GitHubServer) -> None:
    headers = {"Authorization": f"Bearer {github_server.token}", "Accept": "application/vnd.github+json"}
    base = f"{github_server.url}/repos/{OWNER_REPO}"
    missing = httpx.post(f"{base}/pulls", json={"base": "main"}, headers=headers)
    assert missing.status_code == 422
    assert missing.json()["message"] == "Validation Failed"
    assert {e["field"] for e in missing.json()["errors"]} == {"title", "head"}
    invalid = httpx.post(f"{base}/pulls", json={"title": "t", "head": "nope", "base": "main"}, headers=headers)
    assert invalid.json()["errors"] == [{"resource": "PullRequest", "field": "head", "code": "invalid"}]
    unauthorized = httpx.get(f"{base}/pulls", headers={"Authorization": "Bearer wrong"})
    assert unauthorized.status_code == 401
    assert unauthorized.json() == {
        "message": "Bad credentials",
        "documentation_url": "https://docs.github.com/rest",
        "status": "401",
    }
    listed = httpx.get(f"{base}/pulls", params={"head": "acme-ml:main", "state": "all"}, headers=headers)
    assert listed.status_code == 200 and listed.json() == []
    assert int(listed.headers["x-ratelimit-remaining"]) == 5000 - int(listed.headers["x-ratelimit-used"])
    assert httpx.patch(f"{base}/pulls/99", json={"state": "closed"}, headers=headers).status_code == 404
