"""The child-server helper against real processes on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.child_server import ChildServerError, free_port, stop, wait_ready

SERVER = "import http.server, sys; http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()"


def test_waits_for_a_real_server_then_stops_it(tmp_path) -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:
        wait_ready(process, f"http://127.0.0.1:{port}/", timeout_s=20)
    finally:
        stop(process, timeout_s=5)
    assert process.poll() is not None


def test_a_child_that_exits_is_reported_with_its_log(tmp_path) -> None:
    log = tmp_path / "child.log"
    with log.open("wb") as handle:
        process = subprocess.Popen([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], stdout=handle)
    with pytest.raises(ChildServerError, match=r"exited with 3[\s\S]*boom"):
        wait_ready(process, f"http://127.0.0.1:{free_port()}/", timeout_s=20, log_path=log)
