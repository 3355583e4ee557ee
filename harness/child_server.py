"""A server in a child process on 127.0.0.1: pick a port, wait until it answers ready, stop it.

Shared by the benchmarks (gateway vs bare server, overload) and the tests that start `infopt serve` as a
real process, so each of them does not poll and tear down in its own way.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx


class ChildServerError(RuntimeError):
    """The child exited or never answered ready; the message names the URL (and the log tail if given)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _log_tail(log_path: Path | None, chars: int = 4000) -> str:
    if log_path is None or not log_path.is_file():
        return ""
    return "\n" + log_path.read_text(errors="replace")[-chars:]


def wait_ready(
    process: subprocess.Popen[bytes],
    url: str,
    *,
    timeout_s: float,
    is_ready: Callable[[httpx.Response], bool] = lambda response: response.status_code == 200,
    log_path: Path | None = None,
) -> None:
    """Poll `url` until `is_ready(response)`; ChildServerError if the child exits or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise ChildServerError(f"server for {url} exited with {process.returncode}{_log_tail(log_path)}")
        try:
            if is_ready(httpx.get(url, timeout=2.0)):
                return
        except httpx.HTTPError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise ChildServerError(f"{url} not ready within {timeout_s} s{_log_tail(log_path)}")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGINT (uvicorn's graceful shutdown: in-flight requests finish), then kill after `timeout_s`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
