"""The gateway's own time on every response, as a W3C `Server-Timing` header: `gateway;dur=<ms>`.

A client's latency mixes the gateway's time with its own (HTTP library, event loop, network, connection
setup); the header separates them per request, so a load test can tell which side a tail comes from and a
capacity model can be checked against the part it models. `dur` runs from the moment the app is called
(the request line and headers parsed) to the moment the response's headers are sent: for a streamed
response that is the time to its first byte. The refusals the HTTP protocol writes before the app runs
(serving/server.py: 431, 408, too_many_connections) carry no header: the app never timed them.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"server-timing"
METRIC = "gateway"


def server_timing_value(seconds: float) -> bytes:
    return f"{METRIC};dur={seconds * 1000.0:.3f}".encode("latin-1")


def parse_gateway_ms(value: str | None) -> float | None:
    """The gateway's `dur` (ms) from a Server-Timing header value; None when absent or malformed."""
    if not value:
        return None
    for entry in value.split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        if name != METRIC:
            continue
        for param in params:
            key, _, number = param.partition("=")
            if key.strip() == "dur":
                try:
                    return float(number)
                except ValueError:
                    return None
    return None


class ServerTiming:
    """Pure ASGI middleware (no per-request object beyond a closure): adds the header to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((HEADER, server_timing_value(time.perf_counter() - began)))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed_send)
