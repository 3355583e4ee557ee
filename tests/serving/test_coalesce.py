"""serving/coalesce.py: what one loop turn writes leaves in one system call, in order, and close loses nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from serving.coalesce import CoalescedTransport, CoalescingWriter


class Recording:
    """A transport that records each write (what the socket would get per system call)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name == "sockname" else default


def test_writes_of_one_turn_leave_joined_at_its_end_and_the_next_turn_starts_a_new_write() -> None:
    async def scenario() -> list[bytes]:
        transport = Recording()
        writer = CoalescingWriter(transport, asyncio.get_running_loop())
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        writer.write(b"{}")
        assert transport.writes == []  # nothing before the turn ends
        await asyncio.sleep(0)
        writer.write(b"second")
        await asyncio.sleep(0)
        return transport.writes

    assert asyncio.run(scenario()) == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", b"second"]


def test_close_flushes_first_and_a_closing_transport_gets_nothing_more() -> None:
    async def scenario() -> tuple[Recording, CoalescedTransport]:
        transport = Recording()
        coalesced = CoalescedTransport(transport, asyncio.get_running_loop())
        coalesced.write(b"head")
        coalesced.write(b"body")
        coalesced.close()  # the queued bytes go out before the close
        coalesced.write(b"late")  # closing: dropped at the flush, not an error
        await asyncio.sleep(0)
        return transport, coalesced

    transport, coalesced = asyncio.run(scenario())
    assert transport.writes == [b"headbody"] and transport.closed and coalesced.is_closing()
    assert coalesced.get_extra_info("sockname") == ("127.0.0.1", 8000)  # the rest is the real transport's


def test_a_discarded_queue_is_never_written() -> None:
    async def scenario() -> list[bytes]:
        transport = Recording()
        writer = CoalescingWriter(transport, asyncio.get_running_loop())
        writer.write(b"for a peer that left")
        writer.discard()
        await asyncio.sleep(0)
        return transport.writes

    assert asyncio.run(scenario()) == []
