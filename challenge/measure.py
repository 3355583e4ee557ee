"""Model-level measurements of one engine: served-shape sweep, accuracy over the test split, roofline.

The sweep is the benchmark stage's (model_builds/benchmark.py): real test texts in one fixed shuffled
order, each batch padded to its longest row as the gateway pads, timed in rounds with `measure_round`
(CUDA events on GPU), medians and spread per cell with `batch_point`, peak memory per cell. The only
addition is a deadline: cells are visited round by round and the sweep stops (keeping what it measured)
when the ladder's budget runs out. Accuracy is scored as the evaluate stage scores it (batches of 64 in
file order), and the paired decision against step 1 comes from model_builds/evaluate.decide.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from challenge.config import ACCURACY_BATCH
from challenge.flops import BertShape, roofline_fraction
from challenge.report import Accuracy, Point, Roofline
from infopt.engines.base import Engine
from infopt.manifest import BatchPoint
from infopt.params import BenchmarkParams, EvaluateParams
from infopt.stats import macro_f1, wilson_interval
from model_builds.benchmark import Round, ServedBatches, _MemoryProbe, batch_point, measure_round
from model_builds.data import Example, encode, load_tokenizer, pad_batch
from model_builds.evaluate import decide


@dataclass(frozen=True)
class TestSet:
    """The test split (or a seeded subsample), tokenized once with the pipeline's tokenizer."""

    texts: list[str]
    labels: np.ndarray
    ids: list[list[int]]
    pad_id: int
    subsampled_from: int | None  # the full split's size when this is a subsample

    @classmethod
    def load(
        cls, examples: Sequence[Example], tokenizer_dir: Path, max_seq_len: int, limit: int | None, seed: int
    ) -> TestSet:
        total = len(examples)
        chosen = list(examples)
        if limit is not None and total > limit:
            order = np.sort(np.random.default_rng(seed).permutation(total)[:limit])
            chosen = [examples[i] for i in order]
        tokenizer = load_tokenizer(tokenizer_dir)
        texts = [example.text for example in chosen]
        return cls(
            texts=texts,
            labels=np.array([example.label for example in chosen], dtype=np.int64),
            ids=encode(tokenizer, texts, max_seq_len),
            pad_id=int(tokenizer.pad_token_id),
            subsampled_from=total if len(chosen) < total else None,
        )

    def served_batches(self) -> ServedBatches:
        return ServedBatches(self.ids, self.pad_id)


def score(engine: Engine, test: TestSet) -> np.ndarray:
    """Logits of `engine` over the test set, in batches of 64 padded to their longest row (as evaluate)."""
    parts = [
        engine.infer(*pad_batch(test.ids[i : i + ACCURACY_BATCH], test.pad_id))
        for i in range(0, len(test.ids), ACCURACY_BATCH)
    ]
    logits = np.concatenate(parts)
    if not np.isfinite(logits).all():
        raise ValueError("the engine produced non-finite logits on the test split")
    return logits


def accuracy_of(
    predictions: np.ndarray,
    test: TestSet,
    num_labels: int,
    config: EvaluateParams,
    seed: int,
    baseline: np.ndarray | None,
    engine_name: str,
) -> Accuracy:
    correct = int(np.sum(predictions == test.labels))
    decision = None
    agreement = None
    if baseline is not None:
        decision = decide("step 1", engine_name, baseline, predictions, test.labels, config, seed)
        agreement = float(np.mean(predictions == baseline))
    return Accuracy(
        n=len(test.labels),
        accuracy=wilson_interval(correct, len(test.labels), config.confidence),
        macro_f1=macro_f1(predictions, test.labels, num_labels),
        decision=decision,
        agreement_with_baseline=agreement,
    )


def sweep(
    infer: Callable[[np.ndarray, np.ndarray], object],
    batches: ServedBatches,
    sizes: Sequence[int],
    config: BenchmarkParams,
    device: str,
    hourly_usd: float,
    deadline: float,
) -> tuple[list[BatchPoint], bool]:
    """Each size in `config.repeats` rounds; (points, cut) where cut means the deadline stopped it early."""
    rounds: dict[int, list[Round]] = {size: [] for size in sizes}
    peaks: dict[int, float] = {}
    cut = False
    for index in range(config.repeats):
        for size in sizes:
            if time.monotonic() > deadline and (index > 0 or rounds[sizes[0]]):
                cut = True
                break
            probe = _MemoryProbe(device) if index == 0 else None
            rounds[size].append(measure_round(infer, batches, size, config, device, probe))
            if probe is not None:
                peaks[size] = probe.peak_mb()
        if cut:
            break
    points = [batch_point(size, rounds[size], peaks[size], hourly_usd) for size in sizes if rounds[size]]
    return points, cut


def to_point(point: BatchPoint, wait_ms: float | None) -> Point:
    return Point(
        batch_size=point.batch_size,
        throughput_rps=point.throughput_rps,
        throughput_rps_min=point.throughput_rps_min,
        throughput_rps_max=point.throughput_rps_max,
        latency_p50_ms=point.latency_p50_ms,
        latency_p95_ms=point.latency_p95_ms,
        latency_p99_ms=point.latency_p99_ms,
        latency_p99_ms_max=point.latency_p99_ms_max,
        predicted_request_p99_ms=None if wait_ms is None else wait_ms + point.latency_p99_ms_max,
        mean_tokens=point.mean_tokens,
        mean_attended_tokens=point.mean_attended_tokens,
        peak_memory_mb=point.peak_memory_mb,
        cost_per_1k_usd=point.cost_per_1k_usd,
    )


def useful_tokens(point: Point | BatchPoint) -> float:
    """The tokens a request's FLOPs are counted at: its own (unpadded) length; the padded width for a point
    measured before attended tokens were recorded. Padding is work the engine did, not work it had to do."""
    return point.mean_attended_tokens if point.mean_attended_tokens is not None else point.mean_tokens


def roofline_of(
    shape: BertShape, point: Point, points: Sequence[BatchPoint], ceiling: str, ceiling_flops: float
) -> Roofline:
    """The fraction of `ceiling` reached at `point`, and at the sweep's highest-throughput batch."""
    flops = shape.flops(useful_tokens(point))
    best = max(points, key=lambda item: item.throughput_rps) if points else None
    best_fraction = (
        roofline_fraction(best.throughput_rps, shape.flops(useful_tokens(best)), ceiling_flops) if best else None
    )
    return Roofline(
        ceiling=ceiling,
        ceiling_flops_per_s=ceiling_flops,
        flops_per_request=flops,
        achieved_flops_per_s=point.throughput_rps * flops,
        fraction=roofline_fraction(point.throughput_rps, flops, ceiling_flops),
        best_batch_size=best.batch_size if best else None,
        best_fraction=best_fraction,
    )
