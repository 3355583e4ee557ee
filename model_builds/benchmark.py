"""Stage `benchmark`: latency/throughput/memory/cost of every built variant x engine x batch size.

Inputs are real test texts tokenized with the variant's tokenizer at the fixed shape (batch, max_seq_len),
fed through the same engine classes the gateway serves with. Writes metrics/benchmark.json and the DVC
plot data plots/latency_vs_batch.{json,png}; logs each variant's sweep to its MLflow run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from infopt.cost import cost_per_1k
from infopt.device import onnxruntime_device, resolve_device
from infopt.engines.base import EngineError
from infopt.fingerprint import collect
from infopt.manifest import Artifact, BatchPoint, VariantBuild
from infopt.params import BenchmarkParams, Params, load_params
from infopt.sla import knees_for_engine
from model_builds.measuring import cycle_batch, encode, load_texts, open_engine, providers_of, tokenizer_dir, write_json
from model_builds.variants.record import enabled_builds

BENCHMARK_JSON = Path("metrics/benchmark.json")
PLOT_JSON = Path("plots/latency_vs_batch.json")
PLOT_PNG = Path("plots/latency_vs_batch.png")
MEMORY_NOTE = {
    "cpu": "peak_memory_mb = process RSS high-water during the cell (VmHWM after a clear_refs reset, and "
    "psutil RSS sampled after every batch) minus the RSS at the start of the cell with the model loaded",
    "cuda": "peak_memory_mb = torch.cuda.max_memory_allocated during the cell (reset at its start)",
}


class BenchmarkError(RuntimeError):
    """A cell could not be measured; the message names variant, engine and batch size."""


@dataclass(frozen=True)
class Cell:
    """One measured (variant, engine, batch size) cell: the contract point plus how it was stopped."""

    point: BatchPoint
    timed_seconds: float
    stopped_by_max_seconds: bool


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


def measure_cell(
    infer: Callable[[np.ndarray, np.ndarray], Any],
    ids: np.ndarray,
    mask: np.ndarray,
    batch_size: int,
    config: BenchmarkParams,
    device: str,
    hourly_usd: float,
) -> Cell:
    """Warm up, then time batches until >= min_iters and >= min_seconds, or max_seconds is reached.

    The warm-up is `warmup_iters` batches of the data plus (when warmup_iters > 0) the last of them again
    with no padding (attention mask all ones): an unpadded batch takes another attention path (HF drops
    the mask, and on CUDA SDPA may pick the flash kernel, which is loaded lazily on first use: one
    ~0.3 s call was seen at batch 1 on an H200 with fp16/fp8). A one-time kernel load is not a request.
    """
    timer = _timer(device)
    probe = _MemoryProbe(device)
    probe.start()
    for index in range(config.warmup_iters):
        batch_ids, batch_mask = cycle_batch(ids, mask, batch_size, index)
        infer(batch_ids, batch_mask)
    if config.warmup_iters:
        infer(batch_ids, np.ones_like(batch_mask))
    probe.sample()
    latencies: list[float] = []
    begin = time.perf_counter()
    stopped_by_max = False
    index = config.warmup_iters
    while True:
        batch_ids, batch_mask = cycle_batch(ids, mask, batch_size, index)
        latencies.append(timer(lambda ids_=batch_ids, mask_=batch_mask: infer(ids_, mask_)))
        probe.sample()
        index += 1
        elapsed = time.perf_counter() - begin
        if len(latencies) >= config.min_iters and elapsed >= config.min_seconds:
            break
        if elapsed >= config.max_seconds:
            stopped_by_max = True
            break
    values = np.asarray(latencies)
    total_seconds = float(values.sum()) / 1000.0
    throughput = batch_size * len(values) / total_seconds
    p50, p95, p99 = (float(value) for value in np.percentile(values, [50, 95, 99]))
    point = BatchPoint(
        batch_size=batch_size,
        throughput_rps=throughput,
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        latency_p99_ms=p99,
        peak_memory_mb=probe.peak_mb(),
        cost_per_1k_usd=cost_per_1k(hourly_usd, throughput),
        iterations=len(values),
    )
    return Cell(point=point, timed_seconds=total_seconds, stopped_by_max_seconds=stopped_by_max)


def plan(builds: Sequence[VariantBuild], engines: Sequence[str]) -> list[tuple[VariantBuild, Artifact]]:
    """Every (built variant, artifact) pair for the engines asked for, in params order."""
    return [
        (build, artifact)
        for build in builds
        if build.status == "built"
        for engine in engines
        if (artifact := build.find_artifact(engine)) is not None
    ]


def run_benchmark(params: Params, root: Path = Path(".")) -> dict[str, Any]:
    """Measure the whole sweep; returns the metrics/benchmark.json payload."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    device = resolve_device(params.device)
    config = params.benchmark
    hourly = params.cost.hourly_usd[device]
    builds = enabled_builds(params, root)
    texts = load_texts("test", root)
    pairs = plan(builds, config.engines)
    variants: dict[str, Any] = {
        build.name: {"status": "skipped", "skip_reason": build.skip_reason}
        for build in builds
        if build.status != "built"
    }
    ort_device, ort_reason = onnxruntime_device(device) if "onnxruntime" in config.engines else (device, None)
    if ort_device != device:  # never time ONNX Runtime on the CPU and file it under a GPU run
        for build, artifact in [pair for pair in pairs if pair[1].engine == "onnxruntime"]:
            entry = variants.setdefault(build.name, {"status": "built", "engines": {}, "sla_knees": {}})
            entry.setdefault("engines_skipped", {})[artifact.engine] = ort_reason
        pairs = [pair for pair in pairs if pair[1].engine != "onnxruntime"]
    with Progress(
        TextColumn("[bold]benchmark[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ) as progress:
        task = progress.add_task("", total=len(pairs) * len(config.batch_sizes))
        for build, artifact in pairs:
            ids, mask = encode(texts, tokenizer_dir(artifact, root), params.model.max_seq_len)
            engine = open_engine(artifact, device, config.threads, root)
            cells: list[Cell] = []
            try:
                for batch_size in config.batch_sizes:
                    progress.update(task, description=f"{build.name}/{artifact.engine} batch {batch_size}")
                    try:
                        cells.append(measure_cell(engine.infer, ids, mask, batch_size, config, device, hourly))
                    except EngineError as error:
                        raise BenchmarkError(
                            f"{build.name}/{artifact.engine} at batch {batch_size} failed: {error}"
                        ) from error
                    progress.advance(task)
            finally:
                providers = providers_of(engine)
                engine.close()
            entry = variants.setdefault(build.name, {"status": "built", "engines": {}, "sla_knees": {}})
            points = [cell.point for cell in cells]
            entry["engines"][artifact.engine] = {
                "artifact": artifact.path,
                "precision": artifact.precision,
                "engine_class": f"{type(engine).__module__}.{type(engine).__name__}",
                **({"providers": providers} if providers is not None else {}),
                "points": [
                    {
                        **cell.point.model_dump(),
                        "timed_seconds": cell.timed_seconds,
                        "stopped_by_max_seconds": cell.stopped_by_max_seconds,
                    }
                    for cell in cells
                ],
            }
            entry["sla_knees"][artifact.engine] = {
                name: knee.model_dump()
                for name, knee in knees_for_engine(points, params.sla_classes, artifact.engine).items()
            }
    return {
        "fingerprint": collect(device, repo=root).model_dump(),
        "device": device,
        "threads": config.threads,
        "timer": "torch.cuda.Event pairs" if device == "cuda" else "time.perf_counter_ns",
        "onnxruntime_device": ort_device if "onnxruntime" in config.engines else None,
        "onnxruntime_skipped": ort_reason,
        "memory": MEMORY_NOTE[device],
        "throughput": "total sequences / total timed seconds of the cell",
        "warmup": f"{config.warmup_iters} data batches + 1 unpadded batch per cell, untimed",
        "hourly_usd": hourly,
        "config": config.model_dump(),
        "variants": {build.name: variants[build.name] for build in builds if build.name in variants},
    }


def points_of(report: dict[str, Any], variant: str) -> dict[str, list[BatchPoint]]:
    """engine -> BatchPoints of one variant in a benchmark payload (extra bookkeeping keys dropped)."""
    engines = report["variants"].get(variant, {}).get("engines", {})
    fields = BatchPoint.model_fields
    return {
        engine: [BatchPoint(**{key: row[key] for key in fields}) for row in entry["points"]]
        for engine, entry in engines.items()
    }


def plot_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for variant in report["variants"]:
        for engine, points in points_of(report, variant).items():
            for point in points:
                rows.append(
                    {
                        "variant": variant,
                        "engine": engine,
                        "series": f"{variant}/{engine}",
                        "batch_size": point.batch_size,
                        "latency_p50_ms": point.latency_p50_ms,
                        "latency_p99_ms": point.latency_p99_ms,
                        "throughput_rps": point.throughput_rps,
                    }
                )
    return rows


def log_to_mlflow(params: Params, report: dict[str, Any]) -> None:
    from infopt.tracking import log_benchmark, log_fingerprint, variant_run

    for variant, entry in report["variants"].items():
        with variant_run(params, variant, stage="benchmark"):
            log_fingerprint(report["fingerprint"])
            if entry["status"] == "built":
                log_benchmark(points_of(report, variant))


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
