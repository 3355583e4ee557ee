"""Git for the agent's branches: a commit holding only the params change, pushed to a stable branch.

The commit is built with plumbing (a temporary index: `read-tree` of the base, `update-index` of the one
file, `write-tree`, `commit-tree`), so the user's working tree, index and current branch are never touched,
and the commit's tree differs from its base in exactly that file. Pushes use `--force-with-lease` on the
branch's last known commit: a proposal replaces the agent's own previous commit, never someone else's.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

AGENT_NAME = "infopt-agent"
AGENT_EMAIL = "infopt-agent@users.noreply.github.com"


class GitError(RuntimeError):
    """A git command failed; the message has the command and git's stderr."""


def git(repo: Path, *args: str, input_text: str | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=repo,
        input=input_text,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )
    if done.returncode != 0:
        raise GitError(f"`git {' '.join(args)}` in {repo} exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def rev_parse(repo: Path, ref: str) -> str | None:
    try:
        return git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip() or None
    except GitError:
        return None


def current_branch(repo: Path) -> str | None:
    name = git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip()
    return None if name == "HEAD" else name


def remote_sha(repo: Path, remote: str, branch: str) -> str | None:
    """The commit `branch` points to on `remote` (ls-remote: no fetch), None if it has no such branch."""
    out = git(repo, "ls-remote", remote, f"refs/heads/{branch}").split()
    return out[0] if out else None


def fetch(repo: Path, remote: str, branch: str) -> str:
    """Fetch `branch` from `remote` and return its commit; GitError if the remote has no such branch."""
    git(repo, "fetch", "--quiet", remote, f"refs/heads/{branch}")
    sha = rev_parse(repo, "FETCH_HEAD")
    if sha is None:
        raise GitError(f"fetching {remote} {branch} gave no commit")
    return sha


def show_file(repo: Path, rev: str, path: str) -> str:
    return git(repo, "show", f"{rev}:{path}")


def tree_of(repo: Path, rev: str) -> str:
    return git(repo, "rev-parse", f"{rev}^{{tree}}").strip()


def parents_of(repo: Path, rev: str) -> list[str]:
    return git(repo, "rev-list", "--parents", "-n", "1", rev).split()[1:]


def changed_files(repo: Path, base: str, rev: str) -> list[str]:
    return git(repo, "diff", "--name-only", base, rev).split()


def _identity(repo: Path) -> dict[str, str]:
    name = os.environ.get("INFOPT_AGENT_GIT_NAME", AGENT_NAME)
    email = os.environ.get("INFOPT_AGENT_GIT_EMAIL", AGENT_EMAIL)
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }


def commit_file(repo: Path, base: str, path: str, content: str, message: str) -> str:
    """A commit on top of `base` whose tree is base's with `path` replaced by `content`."""
    listing = git(repo, "ls-tree", base, "--", path).split()
    mode = listing[0] if listing else "100644"
    blob = git(repo, "hash-object", "-w", "--stdin", input_text=content).strip()
    with tempfile.TemporaryDirectory(prefix="infopt-agent-index-") as folder:
        env = {"GIT_INDEX_FILE": str(Path(folder) / "index")}
        git(repo, "read-tree", base, env=env)
        git(repo, "update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}", env=env)
        tree = git(repo, "write-tree", env=env).strip()
    return git(repo, "commit-tree", tree, "-p", base, "-F", "-", input_text=message, env=_identity(repo)).strip()


def push(repo: Path, remote: str, commit: str, branch: str, *, expected: str | None) -> None:
    """Point `remote`'s `branch` at `commit`, only if it still is `expected` (None: must not exist yet)."""
    lease = f"--force-with-lease=refs/heads/{branch}:{expected or ''}"
    git(repo, "push", "--quiet", lease, remote, f"{commit}:refs/heads/{branch}")


def remote_url(repo: Path, remote: str) -> str:
    return git(repo, "remote", "get-url", remote).strip()


def github_slug(url: str) -> str | None:
    """owner/name from a GitHub remote URL (https or ssh), None for other remotes (a local bare repo)."""
    found = re.search(r"github\.com[:/]+([^/\s]+)/([^/\s]+?)(?:\.git)?/?$", url)
    return f"{found.group(1)}/{found.group(2)}" if found else None
