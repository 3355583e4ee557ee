"""Measure one batch size on a real engine, exactly as the benchmark stage measures its sweep.

The batch-tuning node asks for the few batch sizes its search needs (agent/batch_search.py). Two measurers:

- `ExperimentMeasurer` (`infopt agent propose --measure-missing`): each size is a DVC experiment of the
  benchmark stage narrowed to the one cell, `dvc exp run --temp -S benchmark.batch_sizes=[b]
  -S ++benchmark.variants=[v] -S benchmark.engines=[e] -S benchmark.threads=[t] benchmark`, read back from
  the experiment's commit: a reviewer lists it with `dvc exp show` and re-runs or applies it by name.
- `ServedShapeMeasurer` (`--measure-in-process`): the same served-shape functions called in this process
  (model_builds/benchmark.py: `measure_round` over real test texts padded to each batch's longest row,
  `batch_point` for medians over `benchmark.repeats` rounds, the worst round's p99 and the cost per 1k), on
  the deployment's artifact, engine and intra-op threads: faster, but nothing to re-run. Peak memory is not
  probed there (reported as 0).

Both give numbers comparable with the manifest's sweep.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.contract import Evidence, ParamValue
from agent.experiments import ExperimentError, ExperimentRunner
from infopt.deployments import ResolvedDeployment
from infopt.manifest import BatchPoint
from infopt.params import BenchmarkParams, Params


class BatchBench:
    """One opened engine and its served batches; `measure(b)` times batch size b (engine opened on first use)."""

    def __init__(
        self,
        infer: Callable[[Any, Any], Any],
        batches: Any,  # model_builds.benchmark.ServedBatches
        config: BenchmarkParams,
        device: str,
        hourly_usd: float,
        close: Callable[[], None] = lambda: None,
    ) -> None:
        self.infer, self.batches, self.config, self.device, self.hourly_usd = infer, batches, config, device, hourly_usd
        self._close = close
        self.measured: list[int] = []

    def round(self, batch_size: int) -> Any:  # -> model_builds.benchmark.Round
        """One timed round of `batch_size` (the benchmark stage's wall clock); subclasses change the clock."""
        from model_builds.benchmark import measure_round

        return measure_round(self.infer, self.batches, batch_size, self.config, self.device)

    def measure(self, batch_size: int) -> BatchPoint:
        from model_builds.benchmark import batch_point

        rounds = [self.round(batch_size) for _ in range(self.config.repeats)]
        self.measured.append(batch_size)
        return batch_point(batch_size, rounds, 0.0, self.hourly_usd)

    def close(self) -> None:
        self._close()


class ServedShapeMeasurer:
    """`context.batch_measurer`: a BatchBench per deployment's (artifact, engine, threads), closed by `close()`."""

    def __init__(self, params: Params, root: Path = Path(".")) -> None:
        self.params, self.root = params, Path(root)
        self.benches: dict[tuple[str, str, int], BatchBench] = {}

    def __call__(self, resolved: ResolvedDeployment) -> Callable[[int], BatchPoint]:
        key = (resolved.artifact.path, resolved.engine, resolved.engine_threads)
        if key not in self.benches:
            from model_builds.benchmark import served_batches
            from model_builds.measuring import load_texts, open_engine

            device = "cuda" if resolved.gpus else "cpu"
            engine = open_engine(resolved.artifact, device, resolved.engine_threads, self.root)
            texts = load_texts("test", self.root)
            batches = served_batches(resolved.artifact, texts, self.params.model.max_seq_len, self.root)
            self.benches[key] = BatchBench(
                engine.infer,
                batches,
                self.params.benchmark,
                device,
                self.params.cost.hourly_usd[device] * max(1, resolved.gpus),
                close=engine.close,
            )
        return self.benches[key].measure

    def evidence(self, resolved: ResolvedDeployment, sizes: Sequence[int]) -> list[Evidence]:
        return [
            Evidence(
                kind="measurement",
                ref="agent/measure.py (the served-shape benchmark of model_builds/benchmark.py, in process)",
                detail=f"batch sizes {list(sizes)} of {resolved.variant.name}/{resolved.engine} "
                f"{resolved.engine_threads}t; not a DVC experiment: re-measure with --measure-missing",
            )
        ]

    def close(self) -> None:
        for bench in self.benches.values():
            bench.close()
        self.benches.clear()


BENCHMARK_JSON = "metrics/benchmark.json"  # the benchmark stage's output (dvc.yaml), committed by each experiment


class ExperimentMeasurer:
    """`context.batch_measurer` the DVC way (see the module docstring); experiments are reused by name."""

    def __init__(self, runner: ExperimentRunner, stage: str = "benchmark") -> None:
        self.runner, self.stage = runner, stage
        self.cited: dict[tuple[str, str, int, int], Evidence] = {}  # (variant, engine, threads, batch) -> experiment

    @staticmethod
    def changes(variant: str, engine: str, threads: int, batch_size: int) -> dict[str, ParamValue]:
        return {
            "benchmark.variants": [variant],
            "benchmark.engines": [engine],
            "benchmark.threads": [threads],
            "benchmark.batch_sizes": [batch_size],
        }

    def measure_cell(self, variant: str, engine: str, threads: int) -> Callable[[int], BatchPoint]:
        def measure(batch_size: int) -> BatchPoint:
            text, result, evidence = self.runner.run_and_read(
                self.changes(variant, engine, threads, batch_size),
                self.stage,
                BENCHMARK_JSON,
                f"batch {batch_size} of {variant}/{engine} {threads}t",
            )
            self.cited[(variant, engine, threads, batch_size)] = evidence
            return point_in(json.loads(text), variant, engine, threads, batch_size, where=f"experiment {result.name}")

        return measure

    def __call__(self, resolved: ResolvedDeployment) -> Callable[[int], BatchPoint]:
        return self.measure_cell(resolved.variant.name, resolved.engine, resolved.engine_threads)

    def evidence_for(self, variant: str, engine: str, threads: int, sizes: Sequence[int]) -> list[Evidence]:
        cells = [(variant, engine, threads, size) for size in sizes]
        return [self.cited[cell] for cell in cells if cell in self.cited]

    def evidence(self, resolved: ResolvedDeployment, sizes: Sequence[int]) -> list[Evidence]:
        return self.evidence_for(resolved.variant.name, resolved.engine, resolved.engine_threads, sizes)

    def close(self) -> None:
        """Nothing to release: each experiment ran in its own temporary copy."""


def point_in(
    report: dict[str, Any], variant: str, engine: str, threads: int, batch_size: int, where: str
) -> BatchPoint:
    """The (variant, engine, threads, batch) point of a metrics/benchmark.json payload; the error names what is
    missing."""
    from model_builds.benchmark import sweeps_of

    if report.get("variants", {}).get(variant, {}).get("status") != "built":
        raise ExperimentError(f"{where}: {BENCHMARK_JSON} has no built variant {variant!r}")
    for sweep in sweeps_of(report, variant):
        point = sweep.point(batch_size) if (sweep.engine, sweep.threads) == (engine, threads) else None
        if point is not None:
            return point
    raise ExperimentError(f"{where}: {BENCHMARK_JSON} has no {variant}/{engine} {threads}t point at batch {batch_size}")
