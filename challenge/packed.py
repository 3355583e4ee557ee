"""The packed-token engine: a batch's tokens end to end, no padding, one CUDA graph per token-count bucket.

The length-bucketed graph engine (challenge/engines.py) still pads every row to its bucket and every
sub-batch to a captured batch size: on WordNet glosses (about 20 tokens a row, rows up to 64) that is
matmul work the requests did not send. Here the gateway's padded batch is packed into one token stream
(`numpy.nonzero` of the mask, row by row), attention runs per row through flash attention's
variable-length kernel (`StaticBert.packed`), and the only padding left is the token count rounded up to
the next captured bucket (buckets grow geometrically by `TOKEN_BUCKET_GROWTH`, so at most that fraction).
The graph of a bucket takes up to `max(batch_sizes)` rows; rows past the batch have length 0.
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from challenge.static_engine import StaticEngine
from infopt.engines.base import EngineError

TOKEN_BUCKET_GROWTH = 1.125  # each captured token count is at most 12.5 % above the one before
TOKEN_ALIGN = 256  # bucket sizes are multiples of this (tensor-core tiles; fp8 wants M % 16 == 0)


def token_buckets(max_tokens: int, smallest: int = TOKEN_ALIGN) -> tuple[int, ...]:
    """Captured token counts from `smallest` to at least `max_tokens`, multiples of TOKEN_ALIGN."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    buckets = [smallest]
    while buckets[-1] < max_tokens:
        grown = math.ceil(buckets[-1] * TOKEN_BUCKET_GROWTH / TOKEN_ALIGN) * TOKEN_ALIGN
        buckets.append(max(grown, buckets[-1] + TOKEN_ALIGN))
    return tuple(buckets)


@dataclass
class _Bucket:
    """One captured token count: static device inputs/outputs, their pinned host staging, the replay."""

    device: dict[str, Any]  # ids, positions, cu_seqlens, cls_rows, out
    host: dict[str, Any]  # the same names, pinned
    run: Any


@dataclass(frozen=True)
class PackedBatch:
    """A padded batch as the packed forward takes it (host arrays; what `PackedEngine` stages)."""

    ids: np.ndarray  # (n,) int64
    positions: np.ndarray  # (n,) int64
    cu_seqlens: np.ndarray  # (rows + 1,) int32
    rows: int


def pack(input_ids: np.ndarray, attention_mask: np.ndarray, max_len: int) -> PackedBatch:
    """The attended tokens of each row end to end; refuses a row with no token or more than `max_len`."""
    rows, columns = np.nonzero(attention_mask)  # row-major: each row's tokens in order
    lengths = np.bincount(rows, minlength=len(input_ids))
    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        raise EngineError(f"batch row {int(empty[0])} has no attended token: nothing to classify")
    if int(lengths.max()) > max_len:
        raise EngineError(f"a row attends to {int(lengths.max())} tokens; this engine captured rows up to {max_len}")
    cu = np.zeros(len(input_ids) + 1, dtype=np.int32)
    np.cumsum(lengths, out=cu[1:])
    return PackedBatch(
        ids=input_ids[rows, columns], positions=columns.astype(np.int64), cu_seqlens=cu, rows=len(input_ids)
    )


class PackedEngine(StaticEngine):
    """StaticBert's packed forward replayed from CUDA graphs (see the module docstring)."""

    def _capture(self, *, emulate: bool) -> None:
        torch = self._torch
        spec = self.spec
        if not spec.batch_sizes or not spec.length_buckets:
            raise EngineError(
                "the packed engine needs batch_sizes (its largest is the rows per call) and length_buckets"
            )
        self.max_rows = max(spec.batch_sizes)
        self.max_len = max(spec.length_buckets)
        self.token_buckets = token_buckets(self.max_rows * self.max_len)
        cuda = not emulate
        self.stream = torch.cuda.Stream() if cuda else None
        pool = torch.cuda.graph_pool_handle() if cuda else None
        self.packed_graphs: dict[int, _Bucket] = {}
        began = time.perf_counter()
        with torch.inference_mode():
            for tokens in sorted(self.token_buckets, reverse=True):  # largest first: it sizes the shared pool
                device = {
                    "ids": torch.full((tokens,), spec.pad_id, dtype=torch.int64, device=self.device),
                    "positions": torch.zeros(tokens, dtype=torch.int64, device=self.device),
                    "cu_seqlens": torch.zeros(self.max_rows + 1, dtype=torch.int32, device=self.device),
                    "cls_rows": torch.zeros(self.max_rows, dtype=torch.int64, device=self.device),
                }
                # capture with every row full-length where it fits: the kernels see their worst case
                rows = min(self.max_rows, tokens // self.max_len)
                device["cu_seqlens"][: rows + 1] = torch.arange(rows + 1, device=self.device) * self.max_len
                device["cu_seqlens"][rows + 1 :] = rows * self.max_len

                def forward(device: dict[str, Any] = device) -> Any:
                    return self.forward.packed(
                        device["ids"], device["positions"], device["cu_seqlens"], device["cls_rows"], self.max_len
                    )

                device["out"], run = self._record(forward, pool)
                host = {
                    name: torch.empty(tuple(value.shape), dtype=value.dtype, pin_memory=cuda)
                    for name, value in device.items()
                }
                self.packed_graphs[tokens] = _Bucket(device=device, host=host, run=run)
        if cuda:
            torch.cuda.synchronize()
        self.capture_seconds = round(time.perf_counter() - began, 2)

    def bucket_for(self, tokens: int) -> int:
        position = bisect.bisect_left(self.token_buckets, tokens)
        if position == len(self.token_buckets):
            raise EngineError(f"{tokens} tokens exceed the largest captured bucket {self.token_buckets[-1]}")
        return self.token_buckets[position]

    def _run_packed(self, batch: PackedBatch) -> np.ndarray:
        torch = self._torch
        tokens = len(batch.ids)
        captured = self.packed_graphs[self.bucket_for(tokens)]
        host = {name: value.numpy() for name, value in captured.host.items()}
        host["ids"][:tokens] = batch.ids
        host["ids"][tokens:] = self.spec.pad_id
        host["positions"][:tokens] = batch.positions
        host["positions"][tokens:] = 0
        host["cu_seqlens"][: batch.rows + 1] = batch.cu_seqlens
        host["cu_seqlens"][batch.rows + 1 :] = tokens  # rows past the batch: length 0
        host["cls_rows"][: batch.rows] = batch.cu_seqlens[:-1]
        host["cls_rows"][batch.rows :] = 0
        with torch.inference_mode(), self._on_stream():
            for name in ("ids", "positions", "cu_seqlens", "cls_rows"):
                captured.device[name].copy_(captured.host[name], non_blocking=True)
            captured.run()
            captured.host["out"].copy_(captured.device["out"], non_blocking=True)
        self._wait()
        return host["out"][: batch.rows].copy()

    def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        mask = np.asarray(attention_mask)
        try:
            parts = [
                self._run_packed(
                    pack(ids[start : start + self.max_rows], mask[start : start + self.max_rows], self.max_len)
                )
                for start in range(0, len(ids), self.max_rows)
            ]
        except EngineError:
            raise
        except Exception as error:  # any failure inside the model is the batch's failure
            raise EngineError(f"packed engine failed on a batch of shape {ids.shape}: {error}") from error
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def close(self) -> None:
        self.packed_graphs = {}
        super().close()
