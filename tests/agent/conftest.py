"""Fixtures of the agent tests: a real git repository with a bare remote, and the local GitHub server."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.agent.github_server import GitHubState, create_app
from tests.serving.gateway_kit import free_socket

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_MANIFEST = ROOT / "tests" / "fixtures" / "manifest.json"
OWNER_REPO = "acme-ml/infopt"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@dataclass
class Repo:
    work: Path  # the user's clone
    remote: Path  # its bare origin

    def remote_branch(self, branch: str) -> str | None:
        done = subprocess.run(
            ["git", "--git-dir", str(self.remote), "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
            capture_output=True,
            text=True,
        )
        return done.stdout.strip() or None

    def remote_file(self, rev: str, path: str) -> str:
        return subprocess.run(
            ["git", "--git-dir", str(self.remote), "show", f"{rev}:{path}"], capture_output=True, text=True, check=True
        ).stdout

    def remote_changed_files(self, base: str, rev: str) -> list[str]:
        out = subprocess.run(
            ["git", "--git-dir", str(self.remote), "diff", "--name-only", base, rev],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.split()


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """A clone of a tiny project (params.yaml, stacks/, a README) whose origin is a local bare repository."""
    remote = tmp_path / f"origin-{uuid.uuid4().hex[:8]}.git"
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    git(work, "config", "user.name", "Test User")
    git(work, "config", "user.email", "test@example.invalid")
    shutil.copy(ROOT / "params.yaml", work / "params.yaml")
    shutil.copytree(ROOT / "stacks", work / "stacks")
    (work / "README.md").write_text("a project\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "initial")
    git(work, "remote", "add", "origin", str(remote))
    git(work, "push", "-q", "origin", "main")
    return Repo(work, remote)


@dataclass
class GitHubServer:
    url: str
    token: str
    state: GitHubState


@contextmanager
def serve_app(app: object) -> Iterator[str]:
    """A plain ASGI app (the local GitHub server) under uvicorn on 127.0.0.1:<free port> in a thread."""
    import uvicorn

    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    start = time.monotonic()
    while not server.started:
        if not thread.is_alive() or time.monotonic() - start > 30:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture
def github_server(repo: Repo) -> Iterator[GitHubServer]:
    token = f"ghp_test_{uuid.uuid4().hex}"
    state = GitHubState(tokens={token}, git_dir=repo.remote)
    with serve_app(create_app(state)) as url:
        yield GitHubServer(url, token, state)


def dvc_project(tmp_path: Path, files: dict[str, str]) -> Path:
    """A real git + DVC repository holding `files`, reproduced (`dvc repro`) and committed as the baseline."""
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Test User")
    git(repo, "config", "user.email", "test@example.invalid")
    for args in (
        ["init", "-q"],
        ["config", "core.analytics", "false"],
        ["config", "core.check_update", "false"],
        ["config", "--local", "core.site_cache_dir", str(tmp_path / "dvc-site")],
    ):
        subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True, check=True)
    for name, text in files.items():
        (repo / name).write_text(text)
    subprocess.run(["dvc", "repro", "-q"], cwd=repo, capture_output=True, text=True, check=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "baseline")
    return repo
