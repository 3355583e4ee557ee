"""How much the ladder measures: one preset per (device, reduced), every knob in one frozen record.

The presets are sized for a time budget: the GPU preset fits in about six minutes on an H200 after the
pipeline, the full CPU preset in about twenty minutes on 2 cores, the reduced CPU preset (the CI test) in a
few minutes on 2 loaded cores. Nothing here is a result: they are how long and how wide to measure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from infopt.params import BenchmarkParams

# Batch sizes a graph engine captures for a gateway: a batch is padded up to the next one (<= 1.5x rows).
GRAPH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
ACCURACY_BATCH = 64  # the evaluate stage's batch: accuracy is scored the way the pipeline scores it


@dataclass(frozen=True)
class LadderConfig:
    device: str
    reduced: bool
    budget_s: float  # wall-clock budget of the whole ladder; steps past it are recorded as cut
    threads: int | None  # intra-op threads of every engine (CPU); None on GPU
    test_limit: int | None  # score accuracy on a seeded subsample of this many test texts (reduced only)
    probe_batch: int  # the precision step carries the precision that is fastest at this batch
    sweep_batches: tuple[int, ...]  # model-level sweep of the batched steps (3-6); the largest is the cap
    length_buckets: tuple[int, ...]  # padded lengths the graph engine captures
    bench: BenchmarkParams  # rounds, warm-up and per-cell time limits of every sweep
    roofline_n: int  # the n of the n^3 matmul that measures the ceiling
    gateway_processes: int  # HTTP worker processes of each gateway
    gateway_replicas: int  # independent gateways (each its admission process and engine) on the one device
    client_processes: int
    connection_factors: tuple[float, ...]  # levels: factor x model req/s x SLA p99 (Little's law), see gateway
    gateway_refine: int  # more levels between the busiest meeting the SLA and the next missing it
    batched_texts_per_request: int  # > 1: the final configuration also through the gateway with k texts a request
    gateway_warmup_s: float
    gateway_duration_s: float
    ready_timeout_s: float
    min_step_s: float  # a step starts only with this much budget left

    def graph_sizes(self, cap: int) -> tuple[int, ...]:
        """Captured batch sizes of a gateway engine whose batches are at most `cap` rows."""
        return tuple(sorted({size for size in GRAPH_SIZES if size <= cap} | {cap}))


def length_buckets(max_seq_len: int, step: int = 16) -> tuple[int, ...]:
    """Multiples of 16 up to max_seq_len (tensor-core friendly widths), max_seq_len itself last."""
    return tuple(sorted({*range(step, max_seq_len, step), max_seq_len}))


def preset(device: str, reduced: bool, max_seq_len: int, threads: int | None, budget_s: float | None) -> LadderConfig:
    cores = os.cpu_count() or 1
    buckets = length_buckets(max_seq_len)
    if device == "cuda":
        return LadderConfig(
            device=device,
            reduced=reduced,
            budget_s=budget_s or 330.0,
            threads=None,
            test_limit=2000 if reduced else None,
            probe_batch=64,
            # 2048: the packed engine's matmuls keep growing past 1024 rows of ~20 tokens
            sweep_batches=(1, 8, 32, 64, 128, 256, 512, 1024, 2048) if not reduced else (1, 16, 64, 256),
            length_buckets=buckets,
            bench=BenchmarkParams(repeats=2, warmup_iters=3, min_iters=10, min_seconds=0.2, max_seconds=1.0),
            roofline_n=8192,
            # 4 gateways x 3 HTTP workers: one admission process carried 17-19k req/s whatever its workers,
            # three carried 30.6k (benchmarks/results/gpu/gateway-2026-12-01/); once the HTTP workers and the
            # engine thread took less CPU, 4 x 3 carried 33.2-34.6k against 27.7-28.8k for 3 x 4 and 25.6k for
            # 2 x 6 (benchmarks/results/gpu/gateway-2026-12-01b/, two runs each)
            gateway_processes=max(1, min(3, (cores - 4) // 4)),
            gateway_replicas=4 if cores >= 16 else 1,
            client_processes=max(1, min(4, cores // 4)),
            connection_factors=(0.25, 0.5, 1.0),
            gateway_refine=3,
            # a client batching its texts shares the per-request work over k rows (16 in the 6c0acca ladder)
            batched_texts_per_request=64,
            gateway_warmup_s=1.5,
            gateway_duration_s=4.0,
            ready_timeout_s=150.0,
            min_step_s=15.0,
        )
    if reduced:
        return LadderConfig(
            device=device,
            reduced=True,
            budget_s=budget_s or 300.0,
            threads=threads,
            test_limit=2000,
            probe_batch=16,
            sweep_batches=(1, 4, 16, 64),
            length_buckets=buckets,
            bench=BenchmarkParams(repeats=1, warmup_iters=1, min_iters=5, min_seconds=0.05, max_seconds=0.5),
            roofline_n=512,
            gateway_processes=1,
            gateway_replicas=1,
            client_processes=1,
            connection_factors=(0.5, 1.0),
            gateway_refine=0,
            batched_texts_per_request=0,
            gateway_warmup_s=1.0,
            gateway_duration_s=2.0,
            ready_timeout_s=240.0,
            min_step_s=5.0,
        )
    return LadderConfig(
        device=device,
        reduced=False,
        budget_s=budget_s or 1800.0,
        threads=threads,
        test_limit=None,
        probe_batch=64,
        sweep_batches=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        length_buckets=buckets,
        bench=BenchmarkParams(repeats=2, warmup_iters=3, min_iters=10, min_seconds=0.2, max_seconds=1.0),
        roofline_n=2048,
        gateway_processes=1,
        gateway_replicas=1,
        client_processes=1,
        connection_factors=(0.25, 0.5, 1.0),
        gateway_refine=1,
        batched_texts_per_request=8,
        gateway_warmup_s=2.0,
        gateway_duration_s=5.0,
        ready_timeout_s=240.0,
        min_step_s=20.0,
    )
