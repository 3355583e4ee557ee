"""Turn a proposal into a branch and a pull request, idempotently.

1. The commit: on the remote's base branch, with only params.yaml changed (agent/git_ops.py). The base's
   params.yaml must be the one the proposal was made from, else the proposal is stale and nothing is pushed.
2. The branch `agent/<topic>-<target>`: pushed only when its tree or base differ from what is there (a
   re-run on the same evidence and base pushes nothing), with a lease on the agent's previous commit.
3. The PR body is always written to a file. Without a token that is where it ends (and the result says so).
4. With a token: an open PR for the branch is updated (title and body; re-running never opens a second
   one). If it carried another proposal, a comment says this one supersedes it and what changed. If no PR
   is open it is created; a 422 "already exists" (a concurrent run) falls back to updating. A proposal
   identical to one a reviewer closed without merging is not reopened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agent.git_ops import GitError, commit_file, fetch, parents_of, push, remote_sha, show_file, tree_of
from agent.github import GitHubClient, PullRequestExists
from agent.proposal import Proposal, marker_of

Action = Literal["created", "updated", "unchanged", "no_token", "declined_before"]


class PublishError(RuntimeError):
    """The proposal cannot be published as is (stale base, push refused); the message says what to do."""


@dataclass
class PublishResult:
    branch: str
    commit: str
    pushed: bool
    action: Action
    body_path: Path
    pr_number: int | None = None
    pr_url: str | None = None
    superseded: str | None = None  # the proposal id this one replaced on the same PR
    messages: list[str] = field(default_factory=list)


def commit_message(proposal: Proposal) -> str:
    recommendation = proposal.recommendation
    lines = [proposal.title, "", recommendation.summary, ""]
    lines += [f"- {change.path}: {change.old} -> {change.new}" for change in recommendation.changes]
    lines += ["", f"Proposal {proposal.id}, by the {recommendation.node} node of `infopt agent propose`."]
    return "\n".join(lines) + "\n"


def push_branch(proposal: Proposal, *, repo: Path, remote: str, base: str) -> tuple[str, bool]:
    """(the branch's commit, whether it was pushed now)."""
    try:
        base_sha = fetch(repo, remote, base)
    except GitError as error:
        raise PublishError(f"cannot fetch the base branch {base!r} from {remote!r}: {error}") from None
    try:
        at_base = show_file(repo, base_sha, proposal.params_file)
    except GitError:
        raise PublishError(f"{remote}/{base} ({base_sha[:10]}) has no {proposal.params_file}") from None
    if at_base != proposal.params_before:
        raise PublishError(
            f"{proposal.params_file} on {remote}/{base} ({base_sha[:10]}) differs from the one this proposal was made "
            "from: pull the base (and re-run `infopt agent propose`) so the PR changes only what the evidence supports"
        )
    commit = commit_file(repo, base_sha, proposal.params_file, proposal.params_after, commit_message(proposal))
    existing = remote_sha(repo, remote, proposal.branch)
    if existing is not None:
        fetch(repo, remote, proposal.branch)
        if tree_of(repo, existing) == tree_of(repo, commit) and parents_of(repo, existing) == [base_sha]:
            return existing, False
    try:
        push(repo, remote, commit, proposal.branch, expected=existing)
    except GitError as error:
        raise PublishError(f"pushing {proposal.branch} to {remote} was refused: {error}") from None
    return commit, True


def publish(
    proposal: Proposal,
    *,
    repo: Path,
    remote: str,
    base: str,
    body_path: Path,
    github: GitHubClient | None,
) -> PublishResult:
    commit, pushed = push_branch(proposal, repo=repo, remote=remote, base=base)
    body_path.parent.mkdir(parents=True, exist_ok=True)
    body_path.write_text(proposal.body)
    result = PublishResult(
        branch=proposal.branch, commit=commit, pushed=pushed, action="unchanged", body_path=body_path
    )
    result.messages.append(
        f"{'pushed' if pushed else 'branch already up to date:'} {remote} {proposal.branch} -> {commit[:10]}"
    )
    if github is None:
        result.action = "no_token"
        result.messages.append(
            f"no GitHub token (GITHUB_TOKEN): no pull request was opened; open one from {proposal.branch} into "
            f"{base} with the body in {body_path}"
        )
        return result

    open_pulls = github.list_pulls(proposal.branch, state="open")
    if not open_pulls:
        for closed in github.list_pulls(proposal.branch, state="closed"):
            found = marker_of(closed.get("body"))
            if found and found[0] == proposal.id and not closed.get("merged_at"):
                result.action = "declined_before"
                result.pr_number, result.pr_url = closed["number"], closed.get("html_url")
                result.messages.append(
                    f"#{closed['number']} proposed this exact change and was closed without merging: not reopening it"
                )
                return result
        try:
            created = github.create_pull(title=proposal.title, head=proposal.branch, base=base, body=proposal.body)
        except PullRequestExists:
            open_pulls = github.list_pulls(proposal.branch, state="open")  # opened concurrently: update it below
        else:
            result.action = "created"
            result.pr_number, result.pr_url = created["number"], created.get("html_url")
            result.messages.append(f"opened #{created['number']} {created.get('html_url', '')}".rstrip())
            return result
    pull, *duplicates = sorted(open_pulls, key=lambda item: item["number"])
    previous = marker_of(pull.get("body"))
    same = pull.get("title") == proposal.title and pull.get("body") == proposal.body
    if not same:
        github.update_pull(pull["number"], title=proposal.title, body=proposal.body)
    result.pr_number, result.pr_url = pull["number"], pull.get("html_url")
    result.action = "unchanged" if same and not pushed else "updated"
    if previous is not None and previous[0] != proposal.id:
        result.superseded = previous[0]
        changes = ", ".join(f"`{c.path}` {c.old} -> {c.new}" for c in proposal.recommendation.changes)
        github.comment(
            pull["number"],
            f"Superseded: proposal `{proposal.id}` replaces `{previous[0]}` on this branch, from newer evidence. "
            f"It now proposes {changes}. The description above is the new proposal.",
        )
        result.messages.append(f"#{pull['number']}: proposal {proposal.id} supersedes {previous[0]} (commented)")
    else:
        result.messages.append(f"#{pull['number']} {result.action} {pull.get('html_url', '')}".rstrip())
    for duplicate in duplicates:  # should not exist; if one does, keep the oldest and say so
        github.comment(duplicate["number"], f"Closing as a duplicate of #{pull['number']} (same agent branch).")
        github.update_pull(duplicate["number"], state="closed")
        result.messages.append(f"closed duplicate #{duplicate['number']}")
    return result
