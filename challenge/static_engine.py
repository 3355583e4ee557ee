"""StaticBert (challenge/forward.py) behind the engine contract: eager, or replayed from CUDA graphs.

With `graphs`, one CUDA graph per (captured batch size, padded-length bucket): a request batch is padded up
to the next captured batch size and length bucket, staged in pinned host memory, copied with non_blocking
copies on the engine's own stream, replayed, and its logits copied back before `infer` returns; with
`split_lengths` a batch's rows are first grouped by length bucket (challenge/split.py).
"""

from __future__ import annotations

import bisect
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from challenge.engine_spec import EngineSpec
from challenge.split import plan_groups, row_lengths
from infopt.engines.base import EngineError
from infopt.engines.cuda_wait import to_numpy, wait_for

CHECK_TOLERANCE = 1e-3  # static forward vs HF, both fp32 on the CPU: relative to the largest |logit|


def _probe_batch(vocab: int, pad_id: int, rows: int = 4, tokens: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic padded batch for the static-vs-HF check (row r keeps tokens - 3 r positions)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(5, vocab, size=(rows, tokens), dtype=np.int64)
    mask = np.ones_like(ids)
    for row in range(rows):
        keep = max(2, tokens - 3 * row)
        ids[row, keep:] = pad_id
        mask[row, keep:] = 0
    return ids, mask


@dataclass
class _Shape:
    """One captured (batch, length): static device tensors, pinned host staging, and how to run it."""

    ids: Any  # (B, T) int64 on the device
    mask: Any
    out: Any  # (B, C) float32 on the device
    host_ids: Any  # pinned host staging of the same shapes
    host_mask: Any
    host_out: Any
    run: Callable[[], None]  # graph.replay (or the eager forward when emulated on the CPU)


class StaticEngine:
    """StaticBert behind the engine contract, eager or replayed from CUDA graphs (see the module docstring)."""

    name = "torch"

    def __init__(self, spec: EngineSpec, *, emulate_graphs: bool = False) -> None:
        """`emulate_graphs` (tests only): on the CPU, run the graph path's staging, bucketing and copies with
        an eager forward in place of each captured graph, so everything but the CUDA calls is exercised."""
        import torch

        from challenge.forward import ForwardError, StaticBert, check_against_hf, load_hf, sparse_module_names

        self._torch = torch
        self.spec = spec
        self.device: str = spec.device
        if spec.precision not in ("fp32", "tf32", "fp16", "bf16"):
            raise EngineError(f"the static forward runs fp32, tf32, fp16 or bf16, not {spec.precision!r}")
        if spec.graphs and spec.device != "cuda" and not emulate_graphs:
            raise EngineError(f"CUDA graphs need device cuda; this engine's device is {spec.device}")
        if spec.threads:
            self._previous_threads = torch.get_num_threads()
            torch.set_num_threads(spec.threads)
        model = load_hf(Path(spec.model_dir))
        config: Any = model.config
        ids, mask = _probe_batch(int(config.vocab_size), spec.pad_id)
        reference = StaticBert(model, device="cpu", precision="fp32", fused_gelu=False)
        t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)
        difference = check_against_hf(reference, model, t_ids, t_mask)
        with torch.inference_mode():
            scale = 1.0 + float(model(input_ids=t_ids, attention_mask=t_mask).logits.abs().max())
        if difference > CHECK_TOLERANCE * scale:
            raise ForwardError(
                f"{spec.model_dir}: the static forward disagrees with the HF forward by {difference:.3g} "
                "(fp32, CPU); refusing to serve it"
            )
        self.check_max_abs_diff = difference
        precision = "fp32" if spec.precision == "tf32" else spec.precision
        if spec.precision == "tf32":
            self._previous_matmul = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision("high")
        sparse = sparse_module_names(Path(spec.model_dir)) if spec.linear == "sparse24" else frozenset()
        if spec.linear == "sparse24" and not sparse:
            raise ForwardError(f"{spec.model_dir} has no sparsity.json: not a 2:4 variant")
        self.forward = StaticBert(
            model,
            device=spec.device,
            precision=precision,
            linear=spec.linear,
            sparse_modules=sparse,
            fused_gelu=spec.fused_gelu,
        )
        self.sparse_modules = self.forward.sparse_linears
        self.num_labels = self.forward.num_labels
        del model, reference
        self.shapes: dict[tuple[int, int], _Shape] = {}
        self.capture_seconds = 0.0
        self.stream: Any = None  # the graphs' own CUDA stream (torch.cuda.Stream); None: eager or emulated
        self._done: Any = None  # the blocking-sync event `_wait` records on it (torch.cuda.Event)
        if spec.graphs:
            self._capture(emulate=emulate_graphs)

    # ------------------------------------------------------------------ CUDA graphs
    def _capture(self, *, emulate: bool) -> None:
        torch = self._torch
        spec = self.spec
        if not spec.batch_sizes or not spec.length_buckets:
            raise EngineError("CUDA graphs need batch_sizes and length_buckets")
        self.sizes = sorted(spec.batch_sizes)
        self.buckets = sorted(spec.length_buckets)
        cuda = not emulate
        self.stream = torch.cuda.Stream() if cuda else None
        pool = torch.cuda.graph_pool_handle() if cuda else None
        began = time.perf_counter()
        # largest first: the later (smaller) graphs fit in the memory pool the first one sized
        order = sorted(((b, t) for b in self.sizes for t in self.buckets), key=lambda shape: -shape[0] * shape[1])
        with torch.inference_mode():
            for batch, tokens in order:
                ids = torch.full((batch, tokens), spec.pad_id, dtype=torch.int64, device=self.device)
                mask = torch.ones((batch, tokens), dtype=torch.int64, device=self.device)
                out, run = self._record(partial(self.forward, ids, mask), pool)
                self.shapes[(batch, tokens)] = _Shape(
                    ids=ids,
                    mask=mask,
                    out=out,
                    host_ids=torch.empty((batch, tokens), dtype=torch.int64, pin_memory=cuda),
                    host_mask=torch.empty((batch, tokens), dtype=torch.int64, pin_memory=cuda),
                    host_out=torch.empty((batch, self.num_labels), dtype=torch.float32, pin_memory=cuda),
                    run=run,
                )
        if cuda:
            torch.cuda.synchronize()
        self.capture_seconds = round(time.perf_counter() - began, 2)
        self.replay_s: dict[tuple[int, int], float] = self._time_replays() if spec.split_lengths else {}

    def _record(self, forward: Callable[[], Any], pool: Any) -> tuple[Any, Callable[[], None]]:
        """`forward`'s output tensor and what recomputes it into that tensor: a CUDA graph captured on the
        engine's stream into the shared memory `pool` (after two warm-up calls outside capture: lazy cuBLAS and
        attention initialisation), or, emulated on the CPU, the eager call copied into it."""
        torch = self._torch
        if self.stream is None:
            out = forward()
            return out, lambda: out.copy_(forward())
        stream = self.stream
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                forward()
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool, stream=stream):
            out = forward()
        return out, graph.replay

    def _wait(self) -> None:
        """Until everything queued on the engine's stream has run, the calling thread asleep meanwhile (not
        spinning a host core the gateway's other processes need: infopt/engines/cuda_wait.py)."""
        if self.stream is not None:
            self._done = wait_for(self.stream, self._done)

    def _on_stream(self) -> Any:
        """The engine's own CUDA stream as the current one (nothing on the CPU)."""
        return self._torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def _time_replays(self, repeats: int = 3) -> dict[tuple[int, int], float]:
        """Seconds one replay of each captured shape takes (the median of `repeats`): split_lengths' costs."""
        torch = self._torch
        times: dict[tuple[int, int], float] = {}
        with torch.inference_mode(), self._on_stream():
            for key, shape in self.shapes.items():
                samples = []
                for _ in range(repeats):
                    began = time.perf_counter()
                    shape.run()
                    if self.stream is not None:
                        self.stream.synchronize()
                    samples.append(time.perf_counter() - began)
                times[key] = float(np.median(samples))
        return times

    def sub_batch_cost(self, rows: int, bucket: int) -> float:
        """Replay seconds of `rows` rows padded to `bucket`, in chunks of the largest captured batch."""
        largest = self.sizes[-1]
        full, rest = divmod(rows, largest)
        cost = full * self.replay_s[(largest, bucket)]
        if rest:
            cost += self.replay_s[self.shape_for(rest, bucket)]
        return cost

    def shape_for(self, rows: int, width: int) -> tuple[int, int]:
        """The captured (batch, length) a batch of `rows` x `width` is padded up to."""
        position = bisect.bisect_left(self.buckets, width)
        if rows > self.sizes[-1] or position == len(self.buckets):
            raise EngineError(
                f"batch {rows} x {width} exceeds the largest captured shape {self.sizes[-1]} x {self.buckets[-1]}"
            )
        return self.sizes[bisect.bisect_left(self.sizes, rows)], self.buckets[position]

    def _run_parts(self, parts: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Stage, copy and replay each part on the engine's stream; synchronise once at the end, or earlier
        when a part needs a captured shape (and so its staging buffers) an earlier part still uses."""
        torch = self._torch
        results: list[np.ndarray] = [np.empty(0)] * len(parts)
        pending: list[tuple[int, _Shape, int]] = []
        in_use: set[tuple[int, int]] = set()

        def finish() -> None:
            self._wait()
            for index, shape, rows in pending:
                results[index] = shape.host_out.numpy()[:rows].copy()
            pending.clear()
            in_use.clear()

        with torch.inference_mode():  # the static tensors were made in inference mode: update them in it
            for index, (ids, mask) in enumerate(parts):
                rows, width = ids.shape
                key = self.shape_for(rows, width)
                if key in in_use:
                    finish()
                in_use.add(key)
                shape = self.shapes[key]
                staged_ids, staged_mask = shape.host_ids.numpy(), shape.host_mask.numpy()
                staged_ids.fill(self.spec.pad_id)
                staged_mask.fill(0)
                staged_ids[:rows, :width] = ids
                staged_mask[:rows, :width] = mask
                staged_mask[rows:, 0] = 1  # padding rows attend to one position: no all-masked softmax
                with self._on_stream():
                    shape.ids.copy_(shape.host_ids, non_blocking=True)
                    shape.mask.copy_(shape.host_mask, non_blocking=True)
                    shape.run()
                    shape.host_out.copy_(shape.out, non_blocking=True)
                pending.append((index, shape, rows))
            finish()
        return results

    def _chunks(self, ids: np.ndarray, mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        largest = self.sizes[-1]
        return [(ids[i : i + largest], mask[i : i + largest]) for i in range(0, len(ids), largest)]

    def _split(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Rows sorted by length bucket, run as the sub-batches `plan_groups` picks, logits back in row order."""
        lengths = row_lengths(mask)
        if int(lengths.max()) > self.buckets[-1]:
            self.shape_for(len(ids), int(lengths.max()))  # raises: wider than the largest captured bucket
        bucket_of = np.searchsorted(np.asarray(self.buckets), lengths, side="left")
        order = np.argsort(bucket_of, kind="stable")
        counts = [(bucket, int(np.sum(bucket_of == index))) for index, bucket in enumerate(self.buckets)]
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        owners: list[np.ndarray] = []
        start = 0
        for _bucket, rows in plan_groups(counts, self.sub_batch_cost):
            chosen = order[start : start + rows]
            start += rows
            width = int(lengths[chosen].max())
            for offset in range(0, rows, self.sizes[-1]):
                part = chosen[offset : offset + self.sizes[-1]]
                parts.append((ids[part, :width], mask[part, :width]))
                owners.append(part)
        logits = self._run_parts(parts)
        out = np.empty((len(ids), self.num_labels), dtype=np.float32)
        for part, values in zip(owners, logits, strict=True):
            out[part] = values
        return out

    # ------------------------------------------------------------------ engine contract
    def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        try:
            if self.shapes:
                if self.spec.split_lengths and len(ids) > 1:
                    return self._split(ids, mask)
                parts = self._run_parts(self._chunks(ids, mask))
                return parts[0] if len(parts) == 1 else np.concatenate(parts)
            torch = self._torch
            with torch.inference_mode():
                t_ids = torch.from_numpy(ids).to(self.device)
                t_mask = torch.from_numpy(mask).to(self.device)
                return to_numpy(self.forward(t_ids, t_mask))
        except EngineError:
            raise
        except Exception as error:  # any failure inside the model is the batch's failure
            raise EngineError(f"static engine failed on a batch of shape {ids.shape}: {error}") from error

    _previous_threads: int | None = None
    _previous_matmul: str | None = None

    def close(self) -> None:
        self.shapes = {}
        self.forward = None  # type: ignore[assignment]
        torch = self._torch
        if self._previous_threads is not None:
            torch.set_num_threads(self._previous_threads)
            self._previous_threads = None
        if self._previous_matmul is not None:
            torch.set_float32_matmul_precision(self._previous_matmul)
            self._previous_matmul = None
        if self.device == "cuda":
            torch.cuda.empty_cache()
