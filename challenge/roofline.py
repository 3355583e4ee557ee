"""The ceiling each step is compared with, measured in the same run: a dense matmul's FLOP rate.

GPU: an n x n x n matmul (8192^3 by default) in bf16, timed with CUDA events after a warm-up, median over
runs; beside it the same shape through FP8 `torch._scaled_mm` (per-tensor scales), the ceiling an FP8 step
is compared with. CPU: an fp32 matmul (2048^3 by default) with the engine's intra-op threads, timed with
perf_counter: the CPU's ceiling for the fp32 engines measured there.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from pydantic import BaseModel, ConfigDict


class MatmulRate(BaseModel):
    """One measured dense matmul rate."""

    model_config = ConfigDict(extra="forbid")

    dtype: str
    n: int  # an n x n x n product: 2 n^3 FLOPs
    runs: int
    median_ms: float
    min_ms: float
    flops_per_s: float  # 2 n^3 / median
    timer: str


def _time_cpu(call: Any, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    return times


def time_cuda(call: Any, warmup: int, runs: int) -> list[float]:
    """Milliseconds of each of `runs` calls (CUDA events), after `warmup` untimed ones."""
    import torch

    for _ in range(warmup):
        call()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(float(start.elapsed_time(end)))
    return times


def _rate(dtype: str, n: int, times_ms: list[float], timer: str) -> MatmulRate:
    median = statistics.median(times_ms)
    return MatmulRate(
        dtype=dtype,
        n=n,
        runs=len(times_ms),
        median_ms=median,
        min_ms=min(times_ms),
        flops_per_s=2.0 * n**3 / (median / 1000.0),
        timer=timer,
    )


def matmul_rate(device: str, n: int, dtype: str, *, warmup: int = 3, runs: int = 10) -> MatmulRate:
    """Dense matmul rate of `dtype` (float32, bfloat16, float16) on `device`."""
    import torch

    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=getattr(torch, dtype))
    with torch.inference_mode():
        if device == "cuda":
            times = time_cuda(lambda: torch.mm(a, b), warmup, runs)
            return _rate(dtype, n, times, "torch.cuda.Event pairs, median")
        times = _time_cpu(lambda: torch.mm(a, b), warmup, runs)
    return _rate(dtype, n, times, "time.perf_counter, median")


def fp8_matmul_rate(n: int, *, warmup: int = 3, runs: int = 10) -> MatmulRate:
    """FP8 (e4m3) x FP8 -> bf16 through torch._scaled_mm with per-tensor scales (CUDA, capability >= 8.9)."""
    import torch

    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=generator).to("cuda").to(torch.float8_e4m3fn)
    b = torch.randn(n, n, generator=generator).to("cuda").to(torch.float8_e4m3fn).t()  # column-major operand
    one = torch.ones((), device="cuda")
    with torch.inference_mode():
        times = time_cuda(
            lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16, use_fast_accum=True),
            warmup,
            runs,
        )
    return _rate("float8_e4m3fn", n, times, "torch.cuda.Event pairs, median")
