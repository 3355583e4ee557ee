"""One `write` per event-loop iteration per connection, for the gateway's HTTP responses and its IPC frames.

uvicorn writes a response's status line and headers, then its body, each with its own `transport.write`: with
uvloop each is a system call and, on TCP, a segment the client wakes for. Under load a gateway worker's CPU is
the ceiling on the GPU host (docs/challenge.md), so every write queued during one callback goes out joined,
in a callback at the loop's next turn (before it polls for I/O again; ordering kept, `close` flushes first).
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescingWriter:
    """Queues writes to `transport`; what one loop iteration queued is written at once at its end."""

    __slots__ = ("_loop", "_out", "_transport")

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport  # an asyncio or uvloop transport (uvloop's are not asyncio's classes)
        self._loop = loop
        self._out: list[bytes] = []

    def write(self, data: bytes) -> None:
        out = self._out
        if not out:
            self._loop.call_soon(self.flush)
        out.append(data)

    def flush(self) -> None:
        out = self._out
        if out:
            if not self._transport.is_closing():
                self._transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def discard(self) -> None:
        """The connection is gone: drop what is queued."""
        self._out.clear()


class CoalescedTransport(CoalescingWriter):
    """A stream transport whose writes coalesce; everything else goes to the real transport."""

    __slots__ = ()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return bool(self._transport.is_closing())

    def __getattr__(self, name: str) -> Any:  # get_extra_info, pause_reading, set_protocol, ...
        return getattr(self._transport, name)
