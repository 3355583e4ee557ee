"""Stage `benchmark`: served-shape latency/throughput/memory/cost of every built variant x engine x threads x batch.

What is measured is what is served: batches of real test texts, tokenized with the variant's tokenizer and
each padded to its longest row (at most max_seq_len), exactly as the gateway's codec pads a batch, fed
through the same engine classes the gateway serves with. Every (variant, engine, threads) sweep is timed
in `repeats` rounds (each round visits every batch size once), and each point reports the median over
rounds with the smallest and largest round beside it, so "best" is chosen from medians and gates can read
the spread. Writes metrics/benchmark.json (a plain output: whole sweeps) and the DVC plot data
plots/latency_vs_batch.{json,png}; logs each variant's sweeps to its MLflow run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from infopt.cost import cost_per_1k
from infopt.device import onnxruntime_device, resolve_device
from infopt.engines.base import EngineError
from infopt.fingerprint import collect
from infopt.manifest import Artifact, BatchPoint, Sweep, VariantBuild
from infopt.params import BenchmarkParams, Params, load_params
from infopt.progress import progress
from model_builds.data import encode, load_tokenizer, pad_batch
from model_builds.measuring import load_texts, open_engine, providers_of, tokenizer_dir, write_json
from model_builds.variants.record import enabled_builds, narrow_builds

BENCHMARK_JSON = Path("metrics/benchmark.json")
PLOT_JSON = Path("plots/latency_vs_batch.json")
PLOT_PNG = Path("plots/latency_vs_batch.png")
MEMORY_NOTE = {
    "cpu": "peak_memory_mb = process RSS high-water during the first round of the cell (VmHWM after a clear_refs "
    "reset, and psutil RSS sampled after every batch) minus the RSS at its start with the model loaded",
    "cuda": "peak_memory_mb = torch.cuda.max_memory_allocated during the first round of the cell (reset at its start)",
}
SHUFFLE_SEED = 20261130  # fixed order of the test texts in the batches: every variant sees the same batches


class BenchmarkError(RuntimeError):
    """A cell could not be measured; the message names variant, engine and batch size."""


@dataclass(frozen=True)
class Round:
    """One timed pass over one batch size: per-batch latencies, the padded widths of those batches and their
    rows' mean attended (unpadded) tokens."""

    latencies_ms: list[float]
    widths: list[int]
    stopped_by_max_seconds: bool
    attended: list[float] = field(default_factory=list)


class ServedBatches:
    """Batches of real texts padded like the gateway pads them, cycling through the test split in one fixed order."""

    def __init__(self, rows: Sequence[list[int]], pad_id: int) -> None:
        order = np.random.default_rng(SHUFFLE_SEED).permutation(len(rows))
        self.rows = [rows[i] for i in order]
        self.pad_id = pad_id

    def batch(self, batch_size: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The index-th batch of `batch_size` rows, padded to its longest row."""
        start = (index * batch_size) % len(self.rows)
        picked = [self.rows[(start + offset) % len(self.rows)] for offset in range(batch_size)]
        return pad_batch(picked, self.pad_id)

    def stream(self, batch_size: int, first: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        index = first
        while True:
            yield self.batch(batch_size, index)
            index += 1


def served_batches(artifact: Artifact, texts: list[str], max_seq_len: int, root: Path) -> ServedBatches:
    tokenizer = load_tokenizer(tokenizer_dir(artifact, root))
    return ServedBatches(encode(tokenizer, texts, max_seq_len), int(tokenizer.pad_token_id))


class _MemoryProbe:
    """Peak memory of one cell, measured as MEMORY_NOTE says for the device."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._process = psutil.Process()
        self._baseline = 0
        self._peak = 0
        self._hwm_reset = False

    def start(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
            self._baseline = torch.cuda.memory_allocated()
            return
        self._baseline = self._process.memory_info().rss
        self._peak = self._baseline
        self._hwm_reset = _reset_hwm()

    def sample(self) -> None:
        if self.device == "cpu":
            self._peak = max(self._peak, self._process.memory_info().rss)

    def peak_mb(self) -> float:
        if self.device == "cuda":
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        peak = self._peak
        if self._hwm_reset:
            peak = max(peak, _read_hwm())
        return max(0.0, (peak - self._baseline) / 2**20)


def _reset_hwm() -> bool:
    """Reset this process's VmHWM (Linux: write 5 to clear_refs); False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _read_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _timer(device: str) -> Callable[[Callable[[], Any]], float]:
    """Milliseconds of one call: perf_counter_ns on CPU, a synchronized CUDA event pair on GPU.

    The engines' `infer` copies the batch to the device and the logits back (blocking), so on cuda the
    event pair spans the whole request: host-to-device copy, forward pass, device-to-host copy.
    """
    if device == "cuda":
        import torch

        def timed_cuda(call: Callable[[], Any]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            torch.cuda.synchronize()
            return float(start.elapsed_time(end))

        return timed_cuda

    def timed_cpu(call: Callable[[], Any]) -> float:
        begin = time.perf_counter_ns()
        call()
        return (time.perf_counter_ns() - begin) / 1e6

    return timed_cpu


def measure_round(
    infer: Callable[[np.ndarray, np.ndarray], Any],
    batches: ServedBatches,
    batch_size: int,
    config: BenchmarkParams,
    device: str,
    probe: _MemoryProbe | None = None,
) -> Round:
    """Warm up, then time batches until >= min_iters and >= min_seconds, or max_seconds is reached.

    The warm-up is `warmup_iters` batches plus (when warmup_iters > 0) the last of them again with no padding
    (attention mask all ones): an unpadded batch takes another attention path (HF drops the mask, and on
    CUDA SDPA may pick the flash kernel, which is loaded lazily on first use: one ~0.3 s call was seen at
    batch 1 on an H200). A one-time kernel load is not a request.
    """
    timer = _timer(device)
    stream = batches.stream(batch_size)
    for _ in range(config.warmup_iters):
        ids, mask = next(stream)
        infer(ids, mask)
    if config.warmup_iters:
        infer(ids, np.ones_like(mask))
    if probe is not None:
        probe.start()
    latencies: list[float] = []
    widths: list[int] = []
    attended: list[float] = []
    begin = time.perf_counter()
    stopped_by_max = False
    while True:
        ids, mask = next(stream)
        latencies.append(timer(partial(infer, ids, mask)))
        widths.append(int(ids.shape[1]))
        attended.append(float(np.count_nonzero(mask)) / len(mask))
        if probe is not None:
            probe.sample()
        elapsed = time.perf_counter() - begin
        if len(latencies) >= config.min_iters and elapsed >= config.min_seconds:
            break
        if elapsed >= config.max_seconds:
            stopped_by_max = True
            break
    return Round(latencies_ms=latencies, widths=widths, stopped_by_max_seconds=stopped_by_max, attended=attended)


def round_stats(round_: Round, batch_size: int) -> dict[str, float]:
    values = np.asarray(round_.latencies_ms)
    p50, p95, p99 = (float(v) for v in np.percentile(values, [50, 95, 99]))
    return {"throughput": batch_size * len(values) / (float(values.sum()) / 1000.0), "p50": p50, "p95": p95, "p99": p99}


def batch_point(batch_size: int, rounds: Sequence[Round], peak_memory_mb: float, hourly_usd: float) -> BatchPoint:
    """Medians over rounds, with the smallest and largest round's throughput and p99 beside them."""
    stats = [round_stats(round_, batch_size) for round_ in rounds]

    def median(key: str) -> float:
        return float(statistics.median(row[key] for row in stats))

    throughput = median("throughput")
    return BatchPoint(
        batch_size=batch_size,
        throughput_rps=throughput,
        throughput_rps_min=min(row["throughput"] for row in stats),
        throughput_rps_max=max(row["throughput"] for row in stats),
        latency_p50_ms=median("p50"),
        latency_p95_ms=median("p95"),
        latency_p99_ms=median("p99"),
        latency_p99_ms_min=min(row["p99"] for row in stats),
        latency_p99_ms_max=max(row["p99"] for row in stats),
        mean_tokens=float(np.mean([width for round_ in rounds for width in round_.widths])),
        mean_attended_tokens=(
            float(np.mean(attended)) if (attended := [a for round_ in rounds for a in round_.attended]) else None
        ),
        peak_memory_mb=peak_memory_mb,
        cost_per_1k_usd=cost_per_1k(hourly_usd, throughput),
        iterations=sum(len(round_.latencies_ms) for round_ in rounds),
        rounds=len(rounds),
    )


def measure_sweep(
    infer: Callable[[np.ndarray, np.ndarray], Any],
    batches: ServedBatches,
    config: BenchmarkParams,
    device: str,
    hourly_usd: float,
    on_cell: Callable[[int, int], None] = lambda _round, _batch: None,
) -> tuple[list[BatchPoint], int]:
    """Every batch size in `config.repeats` rounds (round r visits all sizes before round r + 1)."""
    rounds: dict[int, list[Round]] = {size: [] for size in config.batch_sizes}
    peaks: dict[int, float] = {}
    stopped = 0
    for index in range(config.repeats):
        for size in config.batch_sizes:
            on_cell(index, size)
            probe = _MemoryProbe(device) if index == 0 else None
            measured = measure_round(infer, batches, size, config, device, probe)
            rounds[size].append(measured)
            stopped += measured.stopped_by_max_seconds
            if probe is not None:
                peaks[size] = probe.peak_mb()
    return [batch_point(size, rounds[size], peaks[size], hourly_usd) for size in config.batch_sizes], stopped


def plan(builds: Sequence[VariantBuild], engines: Sequence[str]) -> list[tuple[VariantBuild, Artifact]]:
    """Every (built variant, artifact) pair for the engines asked for, in params order."""
    return [
        (build, artifact)
        for build in builds
        if build.status == "built"
        for engine in engines
        if (artifact := build.find_artifact(engine)) is not None
    ]


def thread_counts(config: BenchmarkParams, device: str) -> list[int]:
    """CPU: every configured count (deployments are planned from theirs); GPU: the first (threads feed the host only)."""
    return list(config.threads) if device == "cpu" else config.threads[:1]


def run_benchmark(params: Params, root: Path = Path(".")) -> dict[str, Any]:
    """Measure every sweep; returns the metrics/benchmark.json payload."""
    device = resolve_device(params.device)
    config = params.benchmark
    hourly = params.cost.hourly_usd[device]
    builds = narrow_builds(enabled_builds(params, root), config.variants)
    texts = load_texts("test", root)
    pairs = plan(builds, config.engines)
    threads = thread_counts(config, device)
    variants: dict[str, Any] = {
        build.name: {"status": "skipped", "skip_reason": build.skip_reason}
        for build in builds
        if build.status != "built"
    }
    for build in builds:
        if build.status == "built":
            variants[build.name] = {"status": "built", "sweeps": [], "engines_skipped": {}}
    ort_device, ort_reason = onnxruntime_device(device) if "onnxruntime" in config.engines else (device, None)
    if ort_device != device:  # never time ONNX Runtime on the CPU and file it under a GPU run
        for build, artifact in [pair for pair in pairs if pair[1].engine == "onnxruntime"]:
            variants[build.name]["engines_skipped"][artifact.engine] = ort_reason
        pairs = [pair for pair in pairs if pair[1].engine != "onnxruntime"]
    cells = len(pairs) * len(threads) * config.repeats * len(config.batch_sizes)
    stopped = 0
    with progress("benchmark", cells, transient=False) as tracker:
        for build, artifact in pairs:
            batches = served_batches(artifact, texts, params.model.max_seq_len, root)
            for count in threads:
                engine = open_engine(artifact, device, count, root)
                label = f"{build.name}/{artifact.engine} {count}t"

                def on_cell(index: int, size: int, label: str = label) -> None:
                    tracker.advance(1, info=f"{label} round {index + 1} batch {size}")

                try:
                    points, cut = measure_sweep(engine.infer, batches, config, device, hourly, on_cell)
                except EngineError as error:
                    raise BenchmarkError(f"{label} failed: {error}") from error
                finally:
                    providers = providers_of(engine)
                    engine.close()
                stopped += cut
                sweep = Sweep.model_validate(
                    {"engine": artifact.engine, "threads": count, "device": device, "points": points}
                )
                variants[build.name]["sweeps"].append(
                    {
                        **sweep.model_dump(),
                        "artifact": artifact.path,
                        "precision": artifact.precision,
                        "engine_class": f"{type(engine).__module__}.{type(engine).__name__}",
                        **({"providers": providers} if providers is not None else {}),
                    }
                )
    return {
        "fingerprint": collect(device, repo=root).model_dump(),
        "device": device,
        "threads": threads,
        "timer": "torch.cuda.Event pairs" if device == "cuda" else "time.perf_counter_ns",
        "shape": "served: real test texts in one fixed shuffled order, each batch padded to its longest row "
        f"(at most max_seq_len {params.model.max_seq_len}), as the gateway's codec pads",
        "rounds": f"{config.repeats} rounds per (variant, engine, threads); each round times every batch size once; "
        "points are medians over rounds with the smallest and largest round",
        "cells_stopped_by_max_seconds": stopped,
        "onnxruntime_device": ort_device if "onnxruntime" in config.engines else None,
        "onnxruntime_skipped": ort_reason,
        "memory": MEMORY_NOTE[device],
        "throughput": "sequences / timed seconds of a round (median over rounds)",
        "warmup": f"{config.warmup_iters} data batches + 1 unpadded batch per round, untimed",
        "hourly_usd": hourly,
        "config": config.model_dump(),
        "variants": {build.name: variants[build.name] for build in builds},
    }


def sweeps_of(report: dict[str, Any], variant: str) -> list[Sweep]:
    """The Sweeps of one variant in a benchmark payload (bookkeeping keys dropped)."""
    fields = Sweep.model_fields
    return [
        Sweep.model_validate({key: row[key] for key in fields if key in row})
        for row in report["variants"].get(variant, {}).get("sweeps", [])
    ]


def plot_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for variant in report["variants"]:
        for sweep in sweeps_of(report, variant):
            for point in sweep.points:
                rows.append(
                    {
                        "variant": variant,
                        "engine": sweep.engine,
                        "threads": sweep.threads,
                        "series": f"{variant}/{sweep.engine}/{sweep.threads}t",
                        "batch_size": point.batch_size,
                        "latency_p50_ms": point.latency_p50_ms,
                        "latency_p99_ms": point.latency_p99_ms,
                        "latency_p99_ms_max": point.latency_p99_ms_max,
                        "throughput_rps": point.throughput_rps,
                        "mean_tokens": point.mean_tokens,
                    }
                )
    return rows


def log_to_mlflow(params: Params, report: dict[str, Any]) -> None:
    from infopt.tracking import log_benchmark, log_fingerprint, variant_run

    for variant, entry in report["variants"].items():
        with variant_run(params, variant, stage="benchmark"):
            log_fingerprint(report["fingerprint"])
            if entry["status"] == "built":
                log_benchmark(sweeps_of(report, variant))


def main() -> None:
    from rich.console import Console

    from model_builds.plots import footer, latency_plot

    params = load_params("params.yaml")
    report = run_benchmark(params)
    write_json(BENCHMARK_JSON, report)
    rows = plot_rows(report)
    write_json(PLOT_JSON, {"latency_vs_batch": rows, "fingerprint": report["fingerprint"]})
    latency_plot(rows, PLOT_PNG, title=f"p99 latency vs batch ({report['device']})", note=footer(report["fingerprint"]))
    from infopt.tracking import tracking_enabled

    began = time.perf_counter()
    if tracking_enabled():
        log_to_mlflow(params, report)
        logged = f"MLflow logging {time.perf_counter() - began:.1f}s"
    else:
        logged = "MLflow logging off (INFOPT_TRACKING)"
    Console().print(f"[bold]benchmark[/]: {len(rows)} cells on {report['device']} -> {BENCHMARK_JSON}; {logged}")


if __name__ == "__main__":
    main()
