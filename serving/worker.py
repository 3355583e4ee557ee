"""One HTTP worker process of a multi-process gateway (serving.workers >= 2), and its link to the admission
process (serving/admission.py).

A worker runs the gateway's own server and app (serving.server, serving.app: the same pre-auth limits,
authentication, content and body checks, parsing, tokenization, one error path and drain) on its own
listening socket(s) (SO_REUSEPORT: the kernel spreads connections over the workers), with an
`AdmissionClient` (serving/admission_link.py) instead of buckets, queue and engines.

Started by the supervisor as `python -m serving.worker`, its WorkerConfig pickled on stdin; it exits when
told to (SIGTERM: the gateway's drain) or when its link closes (the admission process is gone).
"""

from __future__ import annotations

import contextlib
import pickle
import socket
import sys
from dataclasses import dataclass

from serving.admission_link import AdmissionClient
from serving.settings import GatewaySettings
from serving.tenancy import Tenancy


@dataclass(frozen=True)
class WorkerConfig:
    """What the supervisor hands a worker (pickled on its stdin)."""

    settings: GatewaySettings
    index: int
    listen_fds: tuple[int, ...]  # the main socket and, with serving.admin_port, the admin socket
    link_fd: int
    log_level: str = "warning"
    access_log: bool = False


def run_worker(config: WorkerConfig) -> None:
    """Serve the gateway app on the inherited sockets until SIGTERM/SIGINT or until the link closes."""
    from serving.app import create_app
    from serving.server import build_server

    settings = config.settings
    tenancy = Tenancy(settings.tenants, settings.sla_classes)
    link = AdmissionClient(
        socket.socket(fileno=config.link_fd),
        tenancy,
        [tenancy.context(tenant.name) for tenant in settings.tenants],
        settings.serving.retry_after_s,
    )
    app = create_app(settings, link=link)
    server = build_server(app, log_level=config.log_level, access_log=config.access_log)

    def lost() -> None:
        server.should_exit = True  # the admission process is gone: nothing left to serve

    link.on_lost = lost
    sockets = [socket.socket(fileno=fd) for fd in config.listen_fds]
    try:
        server.run(sockets=sockets)
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


def main() -> None:
    config = pickle.loads(sys.stdin.buffer.read())
    if not isinstance(config, WorkerConfig):
        raise SystemExit(f"serving.worker expects a pickled WorkerConfig on stdin, got {type(config).__name__}")
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it handled once it has shut down
        run_worker(config)


if __name__ == "__main__":
    # Run as the importable module, so the pickled WorkerConfig's class is this module's, not __main__'s.
    from serving import worker

    worker.main()
