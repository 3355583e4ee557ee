"""A local GitHub REST server (starlette) with the endpoints the agent uses, for tests on 127.0.0.1.

Shapes follow GitHub's REST documentation (pulls: list/create/get/update; issue comments: list/create/
update): the fields the agent and a reader rely on, with GitHub's error bodies:
- 401 `{"message": "Bad credentials", "documentation_url": ..., "status": "401"}` for a missing/unknown token;
- 422 `Validation Failed` with `errors` (`missing_field`, `invalid` head branch, and the custom
  "A pull request already exists for owner:branch." for a second open PR of the same head and base);
- rate limits injected by a test (`server.fail_next(...)`): 403 with `x-ratelimit-remaining: 0` and
  `x-ratelimit-reset`, or 403/429 with `retry-after` (secondary limits).
Every response carries x-ratelimit-limit/remaining/used/reset/resource headers. Head branches are checked
against a real (bare) git repository when one is given, and PRs carry its head/base commit SHAs.

Run it by hand: `python -m tests.agent.github_server --port 8765 --token TOKEN --git-dir REMOTE.git`.
"""

from __future__ import annotations

import argparse
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DOCS = "https://docs.github.com/rest"
RATE_LIMIT = 5000


@dataclass
class Fault:
    status: int
    message: str
    headers: dict[str, str]


@dataclass
class GitHubState:
    tokens: set[str]
    git_dir: Path | None = None
    login: str = "infopt-agent"
    pulls: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "owner/repo" -> PRs
    comments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "owner/repo" -> comments
    requests: list[tuple[str, str, Any]] = field(default_factory=list)  # (method, path, json body)
    auth_headers: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    next_id: int = 1000
    used: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, status: int, message: str, headers: dict[str, str]) -> None:
        self.faults.append(Fault(status, message, headers))

    def open_pulls(self, repo: str) -> list[dict[str, Any]]:
        return [pull for pull in self.pulls.get(repo, []) if pull["state"] == "open"]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def create_app(state: GitHubState) -> Starlette:
    def rate_headers() -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(RATE_LIMIT),
            "x-ratelimit-remaining": str(max(0, RATE_LIMIT - state.used)),
            "x-ratelimit-used": str(state.used),
            "x-ratelimit-reset": str(int(time.time()) + 3600),
            "x-ratelimit-resource": "core",
        }

    def error(status: int, message: str, errors: list[dict[str, Any]] | None = None, doc: str = DOCS) -> Response:
        body: dict[str, Any] = {"message": message, "documentation_url": doc, "status": str(status)}
        if errors is not None:
            body["errors"] = errors
        return JSONResponse(body, status_code=status, headers=rate_headers())

    def branch_sha(branch: str) -> str | None:
        if state.git_dir is None:
            return "0" * 40
        done = subprocess.run(
            ["git", "--git-dir", str(state.git_dir), "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
            capture_output=True,
            text=True,
        )
        return done.stdout.strip() or None

    def api_root(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            body = None
            if request.method in ("POST", "PATCH"):
                try:
                    body = await request.json()
                except ValueError:
                    return error(400, "Problems parsing JSON")
            with state.lock:
                state.requests.append((request.method, request.url.path, body))
                header = request.headers.get("authorization", "")
                state.auth_headers.append(header)
                scheme, _, token = header.partition(" ")
                if scheme.lower() not in ("bearer", "token") or token not in state.tokens:
                    return error(401, "Bad credentials")
                state.used += 1
                if state.faults:
                    fault = state.faults.pop(0)
                    return JSONResponse(
                        {
                            "message": fault.message,
                            "documentation_url": f"{DOCS}/overview/rate-limits-for-the-rest-api",
                        },
                        status_code=fault.status,
                        headers={**rate_headers(), **fault.headers},
                    )
                return handler(request, body)

        return endpoint

    def pull_json(request: Request, repo: str, pull: dict[str, Any]) -> dict[str, Any]:
        root = api_root(request)
        owner = repo.split("/")[0]
        user = {"login": state.login, "id": 1, "type": "User"}
        head_sha = branch_sha(pull["head"]) or "0" * 40
        base_sha = branch_sha(pull["base"]) or "0" * 40
        return {
            "url": f"{root}/repos/{repo}/pulls/{pull['number']}",
            "id": pull["id"],
            "node_id": f"PR_{pull['id']}",
            "html_url": f"https://github.local/{repo}/pull/{pull['number']}",
            "issue_url": f"{root}/repos/{repo}/issues/{pull['number']}",
            "comments_url": f"{root}/repos/{repo}/issues/{pull['number']}/comments",
            "number": pull["number"],
            "state": pull["state"],
            "locked": False,
            "title": pull["title"],
            "body": pull["body"],
            "user": user,
            "created_at": pull["created_at"],
            "updated_at": pull["updated_at"],
            "closed_at": pull["closed_at"],
            "merged_at": None,
            "draft": pull["draft"],
            "maintainer_can_modify": pull["maintainer_can_modify"],
            "head": {
                "label": f"{owner}:{pull['head']}",
                "ref": pull["head"],
                "sha": head_sha,
                "user": user,
                "repo": {"full_name": repo},
            },
            "base": {
                "label": f"{owner}:{pull['base']}",
                "ref": pull["base"],
                "sha": base_sha,
                "user": user,
                "repo": {"full_name": repo},
            },
        }

    def comment_json(request: Request, repo: str, comment: dict[str, Any]) -> dict[str, Any]:
        root = api_root(request)
        return {
            "id": comment["id"],
            "node_id": f"IC_{comment['id']}",
            "url": f"{root}/repos/{repo}/issues/comments/{comment['id']}",
            "html_url": f"https://github.local/{repo}/pull/{comment['issue']}#issuecomment-{comment['id']}",
            "issue_url": f"{root}/repos/{repo}/issues/{comment['issue']}",
            "body": comment["body"],
            "user": {"login": state.login, "id": 1, "type": "User"},
            "created_at": comment["created_at"],
            "updated_at": comment["updated_at"],
            "author_association": "NONE",
        }

    def repo_of(request: Request) -> str:
        return f"{request.path_params['owner']}/{request.path_params['repo']}"

    def paged(request: Request, items: list[dict[str, Any]]) -> Response:
        per_page = max(1, min(100, int(request.query_params.get("per_page", 30))))
        page = max(1, int(request.query_params.get("page", 1)))
        chunk = items[(page - 1) * per_page : page * per_page]
        headers = rate_headers()
        if page * per_page < len(items):
            query = dict(request.query_params) | {"page": str(page + 1), "per_page": str(per_page)}
            link = str(request.url.include_query_params(**query))
            headers["link"] = f'<{link}>; rel="next"'
        return JSONResponse(chunk, headers=headers)

    def list_pulls(request: Request, body: Any) -> Response:
        repo = repo_of(request)
        want_state = request.query_params.get("state", "open")
        head = request.query_params.get("head")
        base = request.query_params.get("base")
        owner = repo.split("/")[0]
        found = []
        for pull in state.pulls.get(repo, []):
            if want_state != "all" and pull["state"] != want_state:
                continue
            if head is not None and head != f"{owner}:{pull['head']}":
                continue
            if base is not None and base != pull["base"]:
                continue
            found.append(pull_json(request, repo, pull))
        return paged(request, sorted(found, key=lambda item: -item["number"]))

    def create_pull(request: Request, body: Any) -> Response:
        repo = repo_of(request)
        doc = f"{DOCS}/pulls/pulls#create-a-pull-request"
        if not isinstance(body, dict):
            return error(400, "Problems parsing JSON")
        missing = [name for name in ("head", "base") if not body.get(name)]
        if not body.get("title") and not body.get("issue"):
            missing.insert(0, "title")
        if missing:
            return error(
                422,
                "Validation Failed",
                [{"resource": "PullRequest", "field": name, "code": "missing_field"} for name in missing],
                doc,
            )
        head, base = str(body["head"]).split(":")[-1], str(body["base"])
        invalid = [name for name, branch in (("head", head), ("base", base)) if branch_sha(branch) is None]
        if invalid:
            return error(
                422,
                "Validation Failed",
                [{"resource": "PullRequest", "field": name, "code": "invalid"} for name in invalid],
                doc,
            )
        owner = repo.split("/")[0]
        if any(p["head"] == head and p["base"] == base for p in state.open_pulls(repo)):
            return error(
                422,
                "Validation Failed",
                [
                    {
                        "resource": "PullRequest",
                        "code": "custom",
                        "message": f"A pull request already exists for {owner}:{head}.",
                    }
                ],
                doc,
            )
        state.next_id += 1
        pulls = state.pulls.setdefault(repo, [])
        pull = {
            "id": state.next_id,
            "number": len(pulls) + 1,
            "state": "open",
            "title": body["title"],
            "body": body.get("body"),
            "head": head,
            "base": base,
            "draft": bool(body.get("draft", False)),
            "maintainer_can_modify": bool(body.get("maintainer_can_modify", False)),
            "created_at": _now(),
            "updated_at": _now(),
            "closed_at": None,
        }
        pulls.append(pull)
        return JSONResponse(pull_json(request, repo, pull), status_code=201, headers=rate_headers())

    def find_pull(repo: str, number: int) -> dict[str, Any] | None:
        return next((p for p in state.pulls.get(repo, []) if p["number"] == number), None)

    def get_pull(request: Request, body: Any) -> Response:
        repo = repo_of(request)
        pull = find_pull(repo, int(request.path_params["number"]))
        if pull is None:
            return error(404, "Not Found")
        return JSONResponse(pull_json(request, repo, pull), headers=rate_headers())

    def update_pull(request: Request, body: Any) -> Response:
        repo = repo_of(request)
        pull = find_pull(repo, int(request.path_params["number"]))
        if pull is None:
            return error(404, "Not Found")
        if not isinstance(body, dict):
            return error(400, "Problems parsing JSON")
        if "state" in body and body["state"] not in ("open", "closed"):
            return error(422, "Validation Failed", [{"resource": "PullRequest", "field": "state", "code": "invalid"}])
        for key in ("title", "body", "state"):
            if key in body:
                pull[key] = body[key]
        pull["closed_at"] = _now() if pull["state"] == "closed" else None
        pull["updated_at"] = _now()
        return JSONResponse(pull_json(request, repo, pull), headers=rate_headers())

    def list_comments(request: Request, body: Any) -> Response:
        repo = repo_of(request)
        number = int(request.path_params["number"])
        items = [comment_json(request, repo, c) for c in state.comments.get(repo, []) if c["issue"] == number]
        return paged(request, items)

    def create_comment(request: Request, body: Any) -> Response:
        repo = repo_of(request)
        number = int(request.path_params["number"])
        if find_pull(repo, number) is None:
            return error(404, "Not Found")
        if not isinstance(body, dict) or not body.get("body"):
            return error(
                422, "Validation Failed", [{"resource": "IssueComment", "field": "body", "code": "missing_field"}]
            )
        state.next_id += 1
        comment = {
            "id": state.next_id,
            "issue": number,
            "body": body["body"],
            "created_at": _now(),
            "updated_at": _now(),
        }
        state.comments.setdefault(repo, []).append(comment)
        return JSONResponse(comment_json(request, repo, comment), status_code=201, headers=rate_headers())

    def update_comment(request: Request, body: Any) -> Response:
        repo = repo_of(request)
        comment_id = int(request.path_params["comment_id"])
        comment = next((c for c in state.comments.get(repo, []) if c["id"] == comment_id), None)
        if comment is None:
            return error(404, "Not Found")
        comment["body"] = body.get("body", comment["body"]) if isinstance(body, dict) else comment["body"]
        comment["updated_at"] = _now()
        return JSONResponse(comment_json(request, repo, comment), headers=rate_headers())

    base = "/repos/{owner}/{repo}"
    return Starlette(
        routes=[
            Route(f"{base}/pulls", guarded(list_pulls), methods=["GET"]),
            Route(f"{base}/pulls", guarded(create_pull), methods=["POST"]),
            Route(f"{base}/pulls/{{number:int}}", guarded(get_pull), methods=["GET"]),
            Route(f"{base}/pulls/{{number:int}}", guarded(update_pull), methods=["PATCH"]),
            Route(f"{base}/issues/{{number:int}}/comments", guarded(list_comments), methods=["GET"]),
            Route(f"{base}/issues/{{number:int}}/comments", guarded(create_comment), methods=["POST"]),
            Route(f"{base}/issues/comments/{{comment_id:int}}", guarded(update_comment), methods=["PATCH"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", action="append", required=True, help="accepted token (repeatable)")
    parser.add_argument("--git-dir", type=Path, default=None, help="bare repository whose branches PRs name")
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(create_app(GitHubState(set(args.token), args.git_dir)), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
