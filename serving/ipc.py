"""Frames between the gateway's HTTP worker processes and its admission process (serving.workers >= 2).

A link is one unix stream socket (a socketpair the supervisor makes per worker). A frame is
`<u32 length><u8 kind><body>` (little-endian; `length` counts kind + body). Writes are coalesced: every
frame queued during one event-loop iteration goes out in one `write` at its end, so under load one system
call carries many requests and the per-request cost is a few struct packs, not a syscall each.

Times in frames are event-loop times. asyncio's loop clock is time.monotonic() and uvloop's is libuv's
cached CLOCK_MONOTONIC, so every process on the host reads the same clock: an arrival stamped by a worker
is a valid arrival (and deadline base) in the admission process, and a bucket hint computed there is
checked against time.monotonic() in the worker. The frames, by direction:

worker -> admission
  INFER   <u32 id><f64 arrival><u16 tenant><u16 rows> then the rows' lengths (u16 each), their input ids
          and their attention masks (int64, concatenated)
  ADMIT   <u32 id><f64 arrival><u16 tenant>: the first look of a `requests`-charged tenant (takes one unit)
  CANCEL  <u32 id>: the worker gave up on a request (its deadline passed there first, or it is draining)
  DONE    <i16 tenant (-1: before auth)><u8 status><f32 latency (NaN: none)><reason code>: one answered request
  LLM     <u32 id><f64 arrival><u16 tenant><u32 rows><u32 estimate>: a completion/chat request of a vLLM
          deployment (the worker forwards it to vLLM itself once admitted): charge the rows/tokens request
          bucket and reserve the estimated prompt tokens, as the single-process gateway does
  USAGE   <u16 tenant><u32 estimate><u32 prompt><u32 completion>: a completion's usage, known after it ended
  QUERY   <u32 id><op>: `ready` or `metrics` (for vLLM, `metrics` then <f64 vLLM waiting, NaN: unknown>)
  PONG    <u32 sync id><u32 inflight> then, for vLLM, <u32> per tenant (in params order): the requests
          this worker forwarded at that tenant's priority without a first response byte yet
  HELLO   <u32 pid>: the worker is serving (its tokenizer is loaded, or its vLLM client started)
admission -> worker
  RESULT  <u32 id><u16 rows><u16 cols><dtype char> then the logits
  OK      <u32 id>: ADMIT passed
  REFUSED <u32 id><JSON of the GatewayError>: answered through the worker's one error path
  HINT    <u16 tenant><f64 until>: the tenant's bucket holds less than one unit until `until` (monotonic)
  REPLY   <u32 id><bytes>: the answer to QUERY
  SYNC    <u32 sync id>
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson

from serving import errors
from serving.coalesce import CoalescingWriter
from serving.codec import Row
from serving.errors import GatewayError
from serving.metrics import REQUEST_STATUSES

FRAME = struct.Struct("<IB")
ID = struct.Struct("<I")
INFER_HEAD = struct.Struct("<IdHH")
ADMIT_BODY = struct.Struct("<IdH")
DONE_HEAD = struct.Struct("<hBf")
RESULT_HEAD = struct.Struct("<IHHc")
HINT_BODY = struct.Struct("<Hd")
PONG_BODY = struct.Struct("<II")
LLM_BODY = struct.Struct("<IdHII")
USAGE_BODY = struct.Struct("<HIII")
WAITING = struct.Struct("<d")

# frame kinds, worker -> admission
INFER, ADMIT, CANCEL, DONE, QUERY, PONG, HELLO, LLM, USAGE = 1, 2, 3, 4, 5, 6, 7, 8, 9
# admission -> worker
RESULT, OK, REFUSED, HINT, REPLY, SYNC = 11, 12, 13, 14, 15, 16
NO_TENANT = -1
STATUS_INDEX = {status: index for index, status in enumerate(REQUEST_STATUSES)}
ERROR_TYPES: dict[str, type[GatewayError]] = {
    name: value
    for name, value in vars(errors).items()
    if isinstance(value, type) and issubclass(value, GatewayError) and not name.startswith("_")
}


class LinkClosed(ConnectionError):
    """The other end of the link went away."""


class FrameProtocol(asyncio.Protocol):
    """Length-prefixed frames over a stream transport; `handlers[kind](body)` per frame received."""

    def __init__(self) -> None:
        self.handlers: dict[int, Callable[[bytes], None]] = {}
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = bytearray()
        self._writer: CoalescingWriter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio's classes
        self._loop = asyncio.get_running_loop()
        self._writer = CoalescingWriter(transport, self._loop)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._writer is not None:
            self._writer.discard()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        size, offset = len(buffer), 0
        while size - offset >= 5:
            length, kind = FRAME.unpack_from(buffer, offset)
            end = offset + 4 + length
            if end > size:
                break
            body = bytes(buffer[offset + 5 : end])
            offset = end
            self.handlers[kind](body)
        if offset:
            del buffer[:offset]

    # ------------------------------------------------------------------ sending
    def send(self, kind: int, body: bytes) -> None:
        """Queue one frame; every frame queued in this loop iteration is written at its end."""
        if self.closed or self._writer is None:
            return
        self._writer.write(FRAME.pack(len(body) + 1, kind))
        self._writer.write(body)

    def flush(self) -> None:
        """Write what is queued now (before the engines stop, say), not at the loop's next turn."""
        if self._writer is not None and not self.closed:
            self._writer.flush()

    def close(self) -> None:
        self.flush()
        if self.transport is not None:
            self.transport.close()


# ---------------------------------------------------------------------- codecs
def encode_infer(call_id: int, arrival: float, tenant: int, rows: Sequence[Row]) -> bytes:
    lengths = np.fromiter((len(ids) for ids, _ in rows), dtype=np.uint16, count=len(rows))
    if len(rows) == 1:
        ids, mask = rows[0]
        tokens = [ids.astype(np.int64, copy=False).tobytes(), mask.astype(np.int64, copy=False).tobytes()]
    else:
        tokens = [
            np.concatenate([ids for ids, _ in rows]).astype(np.int64, copy=False).tobytes(),
            np.concatenate([mask for _, mask in rows]).astype(np.int64, copy=False).tobytes(),
        ]
    head = INFER_HEAD.pack(call_id, arrival, tenant, len(rows))
    return b"".join([head, lengths.tobytes(), *tokens])


def decode_infer(body: bytes) -> tuple[int, float, int, list[Row]]:
    call_id, arrival, tenant, count = INFER_HEAD.unpack_from(body)
    offset = INFER_HEAD.size
    lengths = np.frombuffer(body, dtype=np.uint16, count=count, offset=offset).tolist()
    offset += 2 * count
    total = sum(lengths)
    ids = np.frombuffer(body, dtype=np.int64, count=total, offset=offset)
    masks = np.frombuffer(body, dtype=np.int64, count=total, offset=offset + 8 * total)
    rows: list[Row] = []
    start = 0
    for length in lengths:
        rows.append((ids[start : start + length], masks[start : start + length]))
        start += length
    return call_id, arrival, tenant, rows


def encode_result(call_id: int, logits: np.ndarray) -> bytes:
    rows, cols = logits.shape
    return RESULT_HEAD.pack(call_id, rows, cols, logits.dtype.char.encode()) + np.ascontiguousarray(logits).tobytes()


def decode_result(body: bytes) -> tuple[int, np.ndarray]:
    call_id, rows, cols, char = RESULT_HEAD.unpack_from(body)
    logits = np.frombuffer(body, dtype=np.dtype(char.decode()), count=rows * cols, offset=RESULT_HEAD.size)
    return call_id, logits.reshape(rows, cols)


def error_to_wire(error: GatewayError) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "type": type(error).__name__,
        "message": error.message,
        "status": error.status,
        "code": error.code,
    }
    if error.retry_after is not None:
        wire["retry_after"] = error.retry_after
    return wire


def error_from_wire(wire: dict[str, Any]) -> GatewayError:
    """The same GatewayError class, message, status, code and Retry-After the admission process raised."""
    cls = ERROR_TYPES.get(wire.get("type", ""), errors.InternalError)
    error = cls.__new__(cls)
    GatewayError.__init__(error, wire["message"])
    error.status = wire["status"]
    error.code = wire["code"]
    if "retry_after" in wire:
        error.retry_after = wire["retry_after"]
    return error


def encode_refused(call_id: int, error: GatewayError) -> bytes:
    return ID.pack(call_id) + orjson.dumps(error_to_wire(error))


def decode_refused(body: bytes) -> tuple[int, GatewayError]:
    (call_id,) = ID.unpack_from(body)
    return call_id, error_from_wire(orjson.loads(body[ID.size :]))


def encode_done(tenant: int, status: str, reason: str | None, latency: float | None) -> bytes:
    head = DONE_HEAD.pack(tenant, STATUS_INDEX[status], math.nan if latency is None else latency)
    return head + reason.encode() if reason else head


def decode_done(body: bytes) -> tuple[int, str, str | None, float | None]:
    tenant, status, latency = DONE_HEAD.unpack_from(body)
    reason = body[DONE_HEAD.size :].decode() or None
    return tenant, REQUEST_STATUSES[status], reason, None if math.isnan(latency) else latency
