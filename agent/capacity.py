"""Service-time curves: how long one engine replica takes for a batch of each size.

`service_curve` is the ONE adapter from the pipeline's measured sweep to the simulator: it reads the
manifest's served-shape sweep (schema 2, `VariantEntry.sweeps`) for the deployment's engine, device and
intra-op threads, the same sweep `infopt.sla.plan_sla` plans from. The p99 is the WORST round's p99 of each
cell (`latency_p99_ms_max`), as plan_sla uses it: a decision on the spread, not on one lucky round.

A curve holds, per measured batch size, the median and the p99 of one batch's engine time. Between
measured sizes both are interpolated linearly in the batch size; past the largest measured size they are
extrapolated along the last segment (the simulator never needs more than the deployment's max_batch_size).
`sample` draws a lognormal whose median and 99th percentile are those two values: the shape of CPU and GPU
batch times (a floor with a right tail), pinned at the two quantiles a sweep reports.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from infopt.deployments import ResolvedDeployment
from infopt.manifest import BatchPoint, Sweep, VariantEntry

Z99 = 2.3263478740408408  # standard normal quantile of 0.99


class CurveError(ValueError):
    """No usable sweep for the variant and engine; the message names both."""


@dataclass(frozen=True)
class ServiceCurve:
    batch_sizes: tuple[int, ...]  # strictly increasing
    p50_s: tuple[float, ...]  # median engine time of one batch, seconds
    p99_s: tuple[float, ...]
    source: str = ""  # where the numbers come from (file, variant, engine)
    _params: dict[int, tuple[float, float]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.batch_sizes:
            raise CurveError(f"service curve from {self.source or 'nowhere'} has no points")
        if len(self.batch_sizes) != len(self.p50_s) or len(self.p50_s) != len(self.p99_s):
            raise CurveError(f"service curve from {self.source}: batch sizes and latencies differ in length")
        if list(self.batch_sizes) != sorted(set(self.batch_sizes)) or self.batch_sizes[0] < 1:
            raise CurveError(f"service curve from {self.source}: batch sizes {self.batch_sizes} are not increasing")
        for size, p50, p99 in zip(self.batch_sizes, self.p50_s, self.p99_s, strict=True):
            if not 0 < p50 <= p99:
                raise CurveError(f"service curve from {self.source}: batch {size} has p50 {p50} s, p99 {p99} s")

    def _interpolate(self, values: Sequence[float], batch: int) -> float:
        sizes = self.batch_sizes
        if len(sizes) == 1:
            return values[0] * batch / sizes[0] if batch > sizes[0] else values[0]
        if batch <= sizes[0]:
            return values[0]
        for index in range(1, len(sizes)):
            if batch <= sizes[index] or index == len(sizes) - 1:
                low, high = sizes[index - 1], sizes[index]
                share = (batch - low) / (high - low)
                return max(values[index - 1] + share * (values[index] - values[index - 1]), 1e-9)
        raise AssertionError("unreachable")

    def p50(self, batch: int) -> float:
        return self._interpolate(self.p50_s, batch)

    def p99(self, batch: int) -> float:
        return max(self._interpolate(self.p99_s, batch), self.p50(batch))

    def lognormal(self, batch: int) -> tuple[float, float]:
        """(mu, sigma) of the lognormal with this batch's median and p99."""
        found = self._params.get(batch)
        if found is None:
            median, tail = self.p50(batch), self.p99(batch)
            found = self._params[batch] = (math.log(median), math.log(tail / median) / Z99)
        return found

    def sample(self, batch: int, rng: random.Random) -> float:
        mu, sigma = self.lognormal(batch)
        return rng.lognormvariate(mu, sigma) if sigma > 0 else math.exp(mu)

    def throughput(self, batch: int) -> float:
        """Rows per second one replica sustains at back-to-back batches of `batch` (median time)."""
        return batch / self.p50(batch)


def curve_from_points(points: Sequence[BatchPoint], source: str) -> ServiceCurve:
    ordered = sorted(points, key=lambda point: point.batch_size)
    return ServiceCurve(
        batch_sizes=tuple(point.batch_size for point in ordered),
        p50_s=tuple(point.latency_p50_ms / 1000.0 for point in ordered),
        p99_s=tuple(max(point.latency_p99_ms_max, point.latency_p50_ms) / 1000.0 for point in ordered),
        source=source,
    )


def find_sweep(entry: VariantEntry, engine: str, threads: int, device: str) -> Sweep | None:
    """The served-shape sweep of `engine` with `threads` on `device` (on a GPU, any thread count)."""
    sweeps = [s for s in entry.sweeps if s.engine == engine and s.device == device and s.shape == "served"]
    return next((s for s in sweeps if s.threads == threads), None) or (
        sweeps[0] if device == "cuda" and sweeps else None
    )


def sweep_ref(entry: VariantEntry, sweep: Sweep) -> str:
    """How a PR names the sweep: the manifest key of the variant's sweep."""
    return f"variants[{entry.name}].sweeps[engine={sweep.engine},threads={sweep.threads},device={sweep.device}]"


def service_curve(
    entry: VariantEntry,
    engine: str,
    threads: int,
    device: str = "cpu",
    *,
    manifest_path: str = "artifacts/manifest.json",
) -> ServiceCurve:
    """The adapter: the manifest's sweep for the engine, threads and device a deployment serves `entry` with."""
    sweep = find_sweep(entry, engine, threads, device)
    if sweep is None or not sweep.points:
        measured = sorted({(s.engine, s.threads, s.device) for s in entry.sweeps})
        raise CurveError(
            f"manifest {manifest_path}: variant {entry.name!r} has no served-shape sweep for engine {engine!r} with "
            f"{threads} thread(s) on {device} (it has (engine, threads, device) {measured}); the benchmark stage "
            "measures torch and onnxruntime with benchmark.threads"
        )
    return curve_from_points(sweep.points, f"{manifest_path}: {sweep_ref(entry, sweep)}")


def deployment_service_curve(resolved: ResolvedDeployment, *, manifest_path: str) -> ServiceCurve:
    """The service curve of a resolved deployment: its variant's sweep on its engine, threads and device."""
    if not isinstance(resolved.variant, VariantEntry):
        raise CurveError(
            f"deployments[{resolved.name}] serves the LLM variant {resolved.variant.name!r} with vLLM: the gateway "
            "simulator models the classifier's dynamic batcher, not vLLM's continuous batching"
        )
    device = "cuda" if resolved.gpus else "cpu"
    return service_curve(
        resolved.variant, resolved.engine, resolved.engine_threads, device, manifest_path=manifest_path
    )
