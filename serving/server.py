"""The gateway's HTTP server: uvicorn (uvloop + httptools) with limits that hold before authentication,
and a shutdown that answers what is left before uvicorn cancels anything.

Limits, per process, from params.serving, enforced in the HTTP protocol (so no request reaches the app,
and no header is buffered without bound, before they pass):
- request line + headers over max_header_bytes, or more than max_header_count fields: 431, closed;
- headers not complete within header_timeout_s of the connection opening or of the request's first byte:
  408, closed (a slowloris client holds nothing for long);
- more than max_connections open connections: the new one gets 503 too_many_connections + Retry-After;
- the body (size 413, read time 408) is the app's, serving/app.py `Gateway._read_body`.
Every refusal is a JSON error from serving.errors and is counted by the gateway like any other.

Shutdown (SIGTERM/SIGINT): uvicorn stops accepting, then waits for request tasks up to its graceful
timeout and cancels the rest, and only then runs the app's lifespan shutdown. `GatewayServer.shutdown`
starts the gateway's drain first: in-flight requests get shutdown_grace_s to finish, the rest is answered
503 shutting_down; uvicorn's own timeout is set SHUTDOWN_MARGIN_S later, so it never cancels a request.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from infopt.params import ServingParams
from serving.coalesce import CoalescedTransport
from serving.errors import (
    GatewayError,
    HeaderTooLarge,
    RequestTimeout,
    TooManyConnections,
    error_body,
    error_headers,
)

SHUTDOWN_MARGIN_S = 3.0  # uvicorn's cancel comes this long after the gateway answered what was left
CYCLE_EXTENSION = "infopt.cycle"  # {"cycle": ...}, read by serving.app after the answer: did the client leave?


def refusal_bytes(error: GatewayError) -> bytes:
    """A complete HTTP/1.1 response for a refusal written by the protocol itself (always closes)."""
    body = error_body(error)
    headers = {**error_headers(error), "Connection": "close"}
    lines = [STATUS_LINE[error.status], b"content-type: application/json\r\n"]
    lines.append(b"content-length: %d\r\n" % len(body))
    lines.extend(f"{name.lower()}: {value}\r\n".encode("latin-1") for name, value in headers.items())
    return b"".join([*lines, b"\r\n", body])


def limited_protocol(limits: ServingParams, gateway: Any) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the gateway's pre-auth limits; `gateway.refused(error)` counts."""

    class GatewayProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_bytes = 0  # raw bytes read while the head is incomplete
            self._parsed_bytes = 0  # request line + header fields as parsed (a head that came in one read)
            self._head_fields = 0
            self._in_head = True
            self._head_timer: asyncio.TimerHandle | None = None
            self._refused = False

        # -------------------------------------------------------------- connection
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            # the status line + headers and the body, written by uvicorn one after the other, leave in one write
            self.transport = CoalescedTransport(transport, self.loop)  # type: ignore[assignment]
            if len(self.connections) > limits.max_connections:
                self._refuse(
                    TooManyConnections(
                        f"this gateway process holds {limits.max_connections} connections "
                        "(serving.max_connections); retry",
                        retry_after=limits.retry_after_s,
                    )
                )
                return
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(limits.header_timeout_s, self._head_timeout)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            self._refuse(
                RequestTimeout(
                    f"request headers not received within {limits.header_timeout_s:g} s (serving.header_timeout_s)",
                    code="header_timeout",
                )
            )

        def _refuse(self, error: GatewayError) -> None:
            if self._refused:
                return
            self._refused = True
            self._disarm()
            if not self.transport.is_closing():
                self.transport.write(refusal_bytes(error))
                self.transport.close()
            gateway.refused(error)

        # -------------------------------------------------------------- parsing
        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            in_head = self._in_head
            super().data_received(data)
            if self._refused or not (in_head and self._in_head):
                return
            self._head_bytes += len(data)
            if self._head_bytes > limits.max_header_bytes:
                self._head_too_large()

        def _head_too_large(self) -> None:
            self._refuse(
                HeaderTooLarge(
                    f"request line and headers exceed {limits.max_header_bytes} bytes (serving.max_header_bytes)"
                )
            )

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes, self._parsed_bytes, self._head_fields, self._in_head = 0, 0, 0, True
            self._arm()

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            self._parsed_bytes += len(url) + 16  # + method, version and separators, roughly
            if self._parsed_bytes > limits.max_header_bytes:
                self._head_too_large()

        def on_header(self, name: bytes, value: bytes) -> None:
            if self._refused:
                return
            self._parsed_bytes += len(name) + len(value) + 4  # ": " and CRLF
            if self._parsed_bytes > limits.max_header_bytes:
                self._head_too_large()
                return
            self._head_fields += 1
            if self._head_fields > limits.max_header_count:
                self._refuse(
                    HeaderTooLarge(f"more than {limits.max_header_count} header fields (serving.max_header_count)")
                )
                return
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._disarm()
            if self._refused:
                return
            super().on_headers_complete()
            if self.cycle is not None:
                # ASGI extension values are dicts: {"cycle": the RequestResponseCycle}
                self.scope.setdefault("extensions", {})[CYCLE_EXTENSION] = {"cycle": self.cycle}

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self._refused:
                super().on_message_complete()

    return GatewayProtocol


class GatewayServer(uvicorn.Server):
    """uvicorn.Server whose shutdown starts the gateway's drain before uvicorn waits and cancels."""

    def __init__(self, config: uvicorn.Config, gateway: Any) -> None:
        super().__init__(config)
        self.gateway = gateway

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        drain = self.gateway.begin_drain()
        try:
            await super().shutdown(sockets)
        finally:
            await asyncio.gather(drain, return_exceptions=True)


def build_server(app: Starlette, *, log_level: str = "warning", access_log: bool = False) -> GatewayServer:
    """The gateway's server for `app` (from serving.app.create_app): uvloop, httptools with the limits."""
    gateway = app.state.gateway
    limits: ServingParams = gateway.settings.serving
    config = uvicorn.Config(
        app,
        host=gateway.settings.host,
        port=gateway.settings.port,
        log_level=log_level,
        loop="uvloop",
        http=limited_protocol(limits, gateway),
        access_log=access_log,
        lifespan="on",
        proxy_headers=False,  # the gateway never reads the client address; the middleware costs per request
        # uvicorn annotates int but only passes it to asyncio.wait_for, which takes a float
        timeout_graceful_shutdown=limits.shutdown_grace_s + SHUTDOWN_MARGIN_S,  # type: ignore[arg-type]
    )
    return GatewayServer(config, gateway)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def listen_sockets(app: Starlette, host: str, port: int) -> list[socket.socket]:
    """The main socket and, when serving.admin_port is set, the admin socket on the same host."""
    admin_port = app.state.gateway.settings.serving.admin_port
    sockets = [bind(host, port)]
    if admin_port is not None:
        sockets.append(bind(host, admin_port))
    return sockets


def run_server(app: Starlette, *, host: str, port: int, log_level: str, access_log: bool = False) -> None:
    """Serve `app` with uvicorn on its C event loop and HTTP parser (uvloop, httptools): the pure-Python
    h11 parser and asyncio loop cost several times more CPU per request, which a 2-core box pays in
    throughput. The access log (one formatted log line per request) is off unless asked for; the gateway's
    own metrics count every request."""
    server = build_server(app, log_level=log_level, access_log=access_log)
    sockets = listen_sockets(app, host, port)
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the SIGINT it handled once it has shut down: a normal exit here
    finally:
        for sock in sockets:
            sock.close()
