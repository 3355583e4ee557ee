"""A local artifact store: the `<sha256>.tar.gz` bundles of one folder over HTTP on 127.0.0.1.

Stands in for the stack's object store when planned pods run on this machine (harness/kube_play.py): the
pods' init containers GET `<base url>/<sha256>.tar.gz` exactly as they would from the cluster's store, and
`infopt artifact fetch` verifies the content hash. GET and HEAD only, no directory listings; every request
is recorded so a test can assert what the pods fetched.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class ArtifactServerError(ValueError):
    """The server cannot start as asked (a non-loopback host, a missing folder)."""


@dataclass(frozen=True)
class Served:
    path: str
    status: int


@dataclass
class ArtifactServer:
    """`with ArtifactServer(folder) as server: server.base_url` serves folder/*.tar.gz until exit."""

    folder: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    requests: list[Served] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        if not ipaddress.ip_address(self.host).is_loopback:
            raise ArtifactServerError(f"host {self.host!r} is not a loopback address; this server is for 127.0.0.1")
        if not Path(self.folder).is_dir():
            raise ArtifactServerError(f"{self.folder}: not a folder of <sha256>.tar.gz bundles")

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def fetched(self, name: str) -> list[int]:
        """Statuses of the requests for `/<name>`, in order."""
        return [item.status for item in self.requests if item.path == f"/{name}"]

    def start(self) -> ArtifactServer:
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def list_directory(self, path: str | os.PathLike[str]) -> Any:
                self.send_error(HTTPStatus.NOT_FOUND, "no listings")
                return None

            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                status = code.value if isinstance(code, HTTPStatus) else int(code) if str(code).isdigit() else 0
                server.requests.append(Served(self.path, status))

            def log_message(self, format: str, *args: Any) -> None:
                return  # requests are recorded in `requests`, not printed

        self._server = ThreadingHTTPServer((self.host, self.port), partial(Handler, directory=str(self.folder)))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="artifact-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> ArtifactServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
