"""Measure one batch size on a real engine, exactly as the benchmark stage measures its sweep.

The batch-tuning node asks for the few batch sizes its search needs (agent/batch_search.py); each is timed with
the pipeline's own served-shape functions (model_builds/benchmark.py: `measure_round` over real test texts
padded to each batch's longest row, `batch_point` for medians over `benchmark.repeats` rounds, the worst
round's p99 and the cost per 1k), on the deployment's artifact, engine and intra-op threads. The numbers are
therefore comparable with the manifest's sweep. Peak memory is not probed here (reported as 0).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

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

    def close(self) -> None:
        for bench in self.benches.values():
            bench.close()
        self.benches.clear()
