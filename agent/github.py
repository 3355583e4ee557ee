"""The few GitHub REST endpoints the agent uses, over httpx.

Pulls: list by head (`GET /repos/{owner}/{repo}/pulls?head=owner:branch&state=`), create (`POST .../pulls`),
update (`PATCH .../pulls/{number}`: title, body, state). Issue comments: list, create
(`POST .../issues/{number}/comments`) and update (`PATCH .../issues/comments/{id}`).

The token comes from the environment (GITHUB_TOKEN) and only ever goes into the Authorization header: it is
not logged, not in any error message, not in `repr`. `GITHUB_API_URL` overrides the API root (GitHub
Enterprise, or the local test server). Errors: 401 -> GitHubAuthError; 422 "A pull request already exists"
-> PullRequestExists; 403/429 rate limits are retried after `retry-after`, or after `x-ratelimit-reset`
when the remaining quota is 0, or after a minute for a secondary limit without either, doubling each time,
up to `max_retries` and only while the wait stays under `max_wait_s`; past that GitHubRateLimited says when
to come back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import httpx

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
SECONDARY_WAIT_S = 60.0  # GitHub's advice for a secondary limit that names no wait


class GitHubError(RuntimeError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GitHubAuthError(GitHubError):
    """401: the token is missing, wrong or expired."""


class GitHubRateLimited(GitHubError):
    def __init__(self, message: str, status: int, wait_s: float) -> None:
        super().__init__(message, status)
        self.wait_s = wait_s


class PullRequestExists(GitHubError):
    """422: an open pull request already exists for this head and base."""


def token_from_env() -> str | None:
    return os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN") or None


def _message(response: httpx.Response) -> tuple[str, list[dict[str, Any]]]:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200], []
    if not isinstance(body, dict):
        return str(body)[:200], []
    return str(body.get("message", "")), list(body.get("errors") or [])


class GitHubClient:
    def __init__(
        self,
        repo: str,
        token: str,
        *,
        api_url: str | None = None,
        max_retries: int = 3,
        max_wait_s: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 30.0,
    ) -> None:
        if "/" not in repo:
            raise ValueError(f"repository {repo!r} is not owner/name")
        self.repo = repo
        self.owner = repo.split("/", 1)[0]
        self.api_url = (api_url or os.environ.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s
        self._sleep = sleep
        self._clock = clock
        self.waits: list[float] = []  # every wait a rate limit imposed, in seconds
        self._client = httpx.Client(
            base_url=self.api_url,
            timeout=timeout_s,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "infopt-agent",
            },
        )

    def __repr__(self) -> str:
        return f"GitHubClient(repo={self.repo!r}, api_url={self.api_url!r})"

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ transport
    def _wait_for(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying a rate-limited response, None if it is not a rate limit."""
        if response.status_code not in (403, 429):
            return None
        headers = response.headers
        retry_after = headers.get("retry-after")
        if retry_after is not None:
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                return SECONDARY_WAIT_S
        if headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset"):
            try:
                return max(0.0, float(headers["x-ratelimit-reset"]) - self._clock())
            except ValueError:
                return SECONDARY_WAIT_S
        message, _ = _message(response)
        if "rate limit" in message.lower() or response.status_code == 429:
            return SECONDARY_WAIT_S * 2**attempt
        return None  # a 403 that is not a rate limit: a permission problem, not worth retrying

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._client.request(method, path, **kwargs)
            except httpx.HTTPError as error:
                raise GitHubError(f"{method} {self.api_url}{path}: {type(error).__name__}: {error}") from None
            if response.status_code < 400:
                return response
            message, errors = _message(response)
            where = f"{method} {path}"
            if response.status_code == 401:
                raise GitHubAuthError(
                    f"{where}: GitHub rejected the token (401 {message or 'Bad credentials'}); "
                    "check GITHUB_TOKEN and its repository permissions (contents, pull requests: write)",
                    401,
                )
            wait = self._wait_for(response, attempt)
            if wait is not None:
                if attempt >= self.max_retries or wait > self.max_wait_s:
                    raise GitHubRateLimited(
                        f"{where}: rate limited ({response.status_code} {message}); retry in {wait:.0f} s",
                        response.status_code,
                        wait,
                    )
                self.waits.append(wait)
                self._sleep(wait)
                attempt += 1
                continue
            details = "; ".join(str(item.get("message") or item) for item in errors)
            if response.status_code == 422 and "already exists" in (details + message).lower():
                raise PullRequestExists(f"{where}: {details or message}", 422)
            raise GitHubError(
                f"{where}: HTTP {response.status_code} {message}" + (f" ({details})" if details else ""),
                response.status_code,
            )

    def _pages(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        url: str | None = path
        query: dict[str, Any] | None = {**params, "per_page": 100}
        for _ in range(20):  # 2,000 items is far beyond what the agent lists
            if url is None:
                break
            response = self._request("GET", url, params=query)
            items.extend(response.json())
            url = response.links.get("next", {}).get("url")
            query = None  # the next link carries the query
        return items

    # ------------------------------------------------------------------ pulls
    def list_pulls(self, head_branch: str, *, state: str = "open") -> list[dict[str, Any]]:
        return self._pages(f"/repos/{self.repo}/pulls", {"head": f"{self.owner}:{head_branch}", "state": state})

    def create_pull(self, *, title: str, head: str, base: str, body: str) -> dict[str, Any]:
        payload = {"title": title, "head": head, "base": base, "body": body, "maintainer_can_modify": True}
        return dict(self._request("POST", f"/repos/{self.repo}/pulls", json=payload).json())

    def update_pull(
        self, number: int, *, title: str | None = None, body: str | None = None, state: str | None = None
    ) -> dict[str, Any]:
        payload = {key: value for key, value in (("title", title), ("body", body), ("state", state)) if value}
        return dict(self._request("PATCH", f"/repos/{self.repo}/pulls/{number}", json=payload).json())

    # ------------------------------------------------------------------ comments
    def comment(self, number: int, body: str) -> dict[str, Any]:
        return dict(self._request("POST", f"/repos/{self.repo}/issues/{number}/comments", json={"body": body}).json())

    def list_comments(self, number: int) -> list[dict[str, Any]]:
        return self._pages(f"/repos/{self.repo}/issues/{number}/comments", {})

    def update_comment(self, comment_id: int, body: str) -> dict[str, Any]:
        return dict(
            self._request("PATCH", f"/repos/{self.repo}/issues/comments/{comment_id}", json={"body": body}).json()
        )

    def upsert_comment(self, number: int, body: str, marker: str) -> dict[str, Any]:
        """Update the comment that contains `marker` (a sticky report), else create it."""
        for existing in self.list_comments(number):
            if marker in (existing.get("body") or ""):
                return self.update_comment(int(existing["id"]), body)
        return self.comment(number, body)
