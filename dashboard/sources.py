"""The committed result files the dashboard reads, and where each number in them was measured.

Every source carries a fingerprint (infopt/fingerprint.py); `Provenance` is the part the page states:
hardware, git SHA and date. Two generations of pipeline files are read: the current schema (sweeps per
engine and threads with medians, accuracy with intervals) and the earlier one still committed
(`engines.<name>.points`, plain accuracies); the page says which numbers have no interval.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LADDERS = "benchmarks/results/challenge"
PIPELINE_LATENCY = "plots/latency_vs_batch.json"
PIPELINE_PARETO = "plots/pareto.json"
PIPELINE_ACCURACY = "metrics/accuracy.json"
GPU_RUNS = "benchmarks/results/gpu"
OVERLOAD = "benchmarks/results/overload.json"
AGENT = "benchmarks/results/agent/latest.json"


class SourceError(ValueError):
    """A committed result file is unreadable; the message names it."""


@dataclass(frozen=True)
class Provenance:
    hardware: str
    git_sha: str
    date: str

    @classmethod
    def of(cls, fingerprint: dict[str, Any] | None) -> Provenance:
        fingerprint = fingerprint or {}
        if fingerprint.get("gpu_name"):
            hardware = f"{fingerprint['gpu_name']} ({fingerprint.get('cpu_count', '?')} CPU cores)"
        else:
            hardware = f"{fingerprint.get('cpu_model', 'unknown CPU')}, {fingerprint.get('cpu_count', '?')} cores"
        return cls(
            hardware=hardware,
            git_sha=str(fingerprint.get("git_sha", "unknown"))[:10],
            date=str(fingerprint.get("timestamp", "unknown")),
        )


@dataclass(frozen=True)
class Source:
    path: str  # relative to the repository root, as committed
    data: Any
    provenance: Provenance


def load(root: Path, relative: str) -> Source | None:
    """The file at `relative` (None when it is not there); its provenance from its fingerprint."""
    path = root / relative
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SourceError(f"{relative}: not JSON ({error})") from None
    fingerprint = data.get("fingerprint") if isinstance(data, dict) else None
    if fingerprint and fingerprint.get("git_sha", "unknown") == "unknown":
        fingerprint = {**fingerprint, "git_sha": recorded_commit(root, path) or "unknown"}
    return Source(relative, data, Provenance.of(fingerprint))


def recorded_commit(root: Path, path: Path) -> str | None:
    """The commit a provenance.json beside the file (or in a folder above it) records: a run on a host whose
    copy of the tree had no .git fingerprints itself git_sha "unknown"."""
    for folder in path.parents:
        if folder == root or root not in folder.parents:
            return None
        record = folder / "provenance.json"
        if record.is_file():
            return str(json.loads(record.read_text())["git_sha"])
    return None


def resolve(data: Any, pointer: str) -> Any:
    """RFC 6901 JSON pointer lookup (the page tags every number with one)."""
    value = data
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        value = value[int(token)] if isinstance(value, list) else value[token]
    return value


def pointer(*parts: str | int) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def ladders(root: Path) -> list[Source]:
    """Every committed ladder.json, full runs first, then reduced ones."""
    found = [load(root, path.relative_to(root).as_posix()) for path in sorted((root / LADDERS).glob("*/ladder.json"))]
    return sorted((s for s in found if s is not None), key=lambda s: (bool(s.data.get("reduced")), s.path))


@dataclass
class Series:
    """One latency-vs-batch line: points (batch, p99 ms, throughput) each with its JSON pointer."""

    label: str
    points: list[tuple[int, float, float, str]] = field(default_factory=list)  # batch, p99, req/s, pointer


def benchmark_series(source: Source) -> list[Series]:
    """Lines of a pipeline benchmark.json, current (`sweeps`) or earlier (`engines.<e>.points`) schema."""
    result = []
    for variant, entry in source.data.get("variants", {}).items():
        sweeps = entry.get("sweeps")
        if sweeps is not None:
            for index, sweep in enumerate(sweeps):
                series = Series(f"{variant}/{sweep['engine']}/{sweep.get('threads', '?')}t")
                for number, point in enumerate(sweep["points"]):
                    where = pointer("variants", variant, "sweeps", index, "points", number)
                    series.points.append((point["batch_size"], point["latency_p99_ms"], point["throughput_rps"], where))
                result.append(series)
            continue
        for engine, cell in (entry.get("engines") or {}).items():
            series = Series(f"{variant}/{engine}")
            for number, point in enumerate(cell.get("points", [])):
                where = pointer("variants", variant, "engines", engine, "points", number)
                series.points.append((point["batch_size"], point["latency_p99_ms"], point["throughput_rps"], where))
            result.append(series)
    return result


def plot_rows_series(source: Source) -> list[Series]:
    """Lines of plots/latency_vs_batch.json (the benchmark stage's DVC plot rows)."""
    by_label: dict[str, Series] = {}
    for number, row in enumerate(source.data.get("latency_vs_batch", [])):
        series = by_label.setdefault(row["series"], Series(row["series"]))
        series.points.append(
            (row["batch_size"], row["latency_p99_ms"], row["throughput_rps"], pointer("latency_vs_batch", number))
        )
    return list(by_label.values())


def gpu_benchmarks(root: Path) -> list[Source]:
    found = [load(root, p.relative_to(root).as_posix()) for p in sorted((root / GPU_RUNS).glob("*/benchmark.json"))]
    return [source for source in found if source is not None]


@dataclass(frozen=True)
class ParetoPoint:
    label: str
    accuracy: float
    low: float | None  # None: the source has no interval
    high: float | None
    cost: float
    on_front: bool
    source: str  # the file of the accuracy
    accuracy_pointer: str
    cost_source: str  # the file of the cost
    cost_pointer: str


def front(points: list[ParetoPoint]) -> list[ParetoPoint]:
    """Mark the points no other point dominates (as cheap and as accurate, one strictly better)."""
    marked = []
    for point in points:
        dominated = any(
            other.cost <= point.cost
            and other.accuracy >= point.accuracy
            and (other.cost < point.cost or other.accuracy > point.accuracy)
            for other in points
            if other is not point
        )
        marked.append(ParetoPoint(**{**point.__dict__, "on_front": not dominated}))
    return marked


def pipeline_pareto(root: Path) -> tuple[list[ParetoPoint], Source | None]:
    """The pipeline's Pareto rows, with intervals from metrics/accuracy.json where its schema has them."""
    pareto = load(root, PIPELINE_PARETO)
    if pareto is None:
        return [], None
    accuracy = load(root, PIPELINE_ACCURACY)
    points = []
    for number, row in enumerate(pareto.data.get("pareto", [])):
        low = high = None
        accuracy_source, accuracy_pointer = pareto.path, pointer("pareto", number, "accuracy")
        cell = (accuracy.data.get("variants", {}).get(row["variant"], {}).get("engines", {}) if accuracy else {}).get(
            row.get("engine") or ""
        )
        if cell and isinstance(cell.get("quality"), dict):
            interval = cell["quality"]["accuracy"]
            low, high = interval["low"], interval["high"]
            accuracy_source = accuracy.path  # type: ignore[union-attr]
            accuracy_pointer = pointer(
                "variants", row["variant"], "engines", row["engine"], "quality", "accuracy", "estimate"
            )
        points.append(
            ParetoPoint(
                label=f"{row['variant']} ({row.get('engine')})",
                accuracy=row["accuracy"],
                low=low,
                high=high,
                cost=row["cost_per_1k_usd"],
                on_front=bool(row.get("on_front")),
                source=accuracy_source,
                accuracy_pointer=accuracy_pointer,
                cost_source=pareto.path,
                cost_pointer=pointer("pareto", number, "cost_per_1k_usd"),
            )
        )
    return points, pareto


def ladder_pareto(source: Source) -> list[ParetoPoint]:
    """Every measured ladder candidate: accuracy (Wilson interval) vs cost per 1k at its step's batch."""
    points = []
    for s, step in enumerate(source.data.get("steps", [])):
        for c, candidate in enumerate(step.get("candidates", [])):
            if candidate.get("status") != "measured" or not candidate.get("point") or not candidate.get("accuracy"):
                continue
            interval = candidate["accuracy"]["accuracy"]
            points.append(
                ParetoPoint(
                    label=f"{step['index']}. {candidate['name']} @{candidate['point']['batch_size']}",
                    accuracy=interval["estimate"],
                    low=interval["low"],
                    high=interval["high"],
                    cost=candidate["point"]["cost_per_1k_usd"],
                    on_front=False,
                    source=source.path,
                    accuracy_pointer=pointer("steps", s, "candidates", c, "accuracy", "accuracy", "estimate"),
                    cost_source=source.path,
                    cost_pointer=pointer("steps", s, "candidates", c, "point", "cost_per_1k_usd"),
                )
            )
    return front(points)


def agent_outcomes(root: Path) -> tuple[list[dict[str, Any]], Source | None]:
    source = load(root, AGENT)
    if source is None:
        return [], None
    raw = source.data
    outcomes = raw if isinstance(raw, list) else raw.get("outcomes", raw.get("recommendations", []))
    return [item for item in outcomes if isinstance(item, dict)], source
