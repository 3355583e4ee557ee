"""The one-line-per-variant summary: metrics/summary.json (DVC metrics), `infopt pipeline summary`, Pareto.

Everything here is derived from the manifest, so the table, the metrics file and the plot always agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from infopt.manifest import BatchPoint, Manifest, VariantEntry

SUMMARY_BATCHES = (1, 16)


@dataclass(frozen=True)
class SummaryRow:
    variant: str
    kind: str
    precision: str
    status: str
    engine: str | None  # the engine of the best-throughput point
    accuracy: float | None
    accuracy_loss: float | None
    within_accuracy_budget: bool | None
    p99_ms_batch_1: float | None
    p99_ms_batch_16: float | None
    best_throughput_rps: float | None
    best_batch_size: int | None
    cost_per_1k_usd: float | None  # at the best throughput
    size_mb: float | None  # of the best engine's artifact
    skip_reason: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def best_point(entry: VariantEntry) -> tuple[str, BatchPoint] | None:
    """(engine, point) of the highest measured throughput over every engine and batch size."""
    candidates = [(engine, point) for engine, points in entry.benchmark.items() for point in points]
    if not candidates:
        return None
    return max(candidates, key=lambda item: item[1].throughput_rps)


def _p99_at(points: Sequence[BatchPoint], batch_size: int) -> float | None:
    return next((point.latency_p99_ms for point in points if point.batch_size == batch_size), None)


def summary_row(entry: VariantEntry) -> SummaryRow:
    best = best_point(entry)
    engine, point = best if best else (None, None)
    points = entry.benchmark.get(engine, []) if engine else []
    size_mb = None
    if engine is not None:
        size_mb = next((a.size_bytes / 2**20 for a in entry.artifacts if a.engine == engine), None)
    return SummaryRow(
        variant=entry.name,
        kind=entry.kind,
        precision=entry.precision,
        status=entry.status,
        engine=engine,
        accuracy=entry.accuracy,
        accuracy_loss=entry.accuracy_loss,
        within_accuracy_budget=entry.within_accuracy_budget,
        p99_ms_batch_1=_p99_at(points, 1),
        p99_ms_batch_16=_p99_at(points, 16),
        best_throughput_rps=point.throughput_rps if point else None,
        best_batch_size=point.batch_size if point else None,
        cost_per_1k_usd=point.cost_per_1k_usd if point else None,
        size_mb=size_mb,
        skip_reason=entry.skip_reason,
    )


def summary_rows(manifest: Manifest) -> list[SummaryRow]:
    return [summary_row(entry) for entry in manifest.variants]


def summary_metrics(rows: Sequence[SummaryRow]) -> dict[str, dict[str, float | bool]]:
    """variant -> flat numeric metrics (what `dvc metrics show/diff` displays as <variant>.<metric>)."""
    keys = (
        "accuracy",
        "accuracy_loss",
        "p99_ms_batch_1",
        "p99_ms_batch_16",
        "best_throughput_rps",
        "best_batch_size",
        "cost_per_1k_usd",
        "size_mb",
    )
    result: dict[str, dict[str, float | bool]] = {}
    for row in rows:
        values = {key: getattr(row, key) for key in keys if getattr(row, key) is not None}
        if row.within_accuracy_budget is not None:
            values["within_accuracy_budget"] = row.within_accuracy_budget
        result[row.variant] = values
    return result


def pareto_rows(rows: Sequence[SummaryRow]) -> list[dict[str, object]]:
    """Accuracy vs cost/1k at best throughput; on_front when no other variant is as cheap and as accurate
    with one of the two strictly better."""
    measured = [row for row in rows if row.accuracy is not None and row.cost_per_1k_usd is not None]
    result = []
    for row in measured:
        dominated = any(
            other.cost_per_1k_usd <= row.cost_per_1k_usd
            and other.accuracy >= row.accuracy
            and (other.cost_per_1k_usd < row.cost_per_1k_usd or other.accuracy > row.accuracy)
            for other in measured
            if other is not row
        )
        result.append(
            {
                "variant": row.variant,
                "engine": row.engine,
                "accuracy": row.accuracy,
                "cost_per_1k_usd": row.cost_per_1k_usd,
                "throughput_rps": row.best_throughput_rps,
                "on_front": not dominated,
            }
        )
    return result


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_table(manifest: Manifest) -> object:
    """A rich Table of the summary rows (printed by `infopt pipeline summary`); skip reasons as caption."""
    from rich.table import Table

    where = manifest.fingerprint.cpu_model if manifest.device == "cpu" else manifest.fingerprint.gpu_name
    rows = summary_rows(manifest)
    skipped = [f"{row.variant}: {row.skip_reason}" for row in rows if row.status != "built"]
    table = Table(
        title=f"{manifest.model_name} variants on {manifest.device} ({where})",
        caption=("skipped: " + "; ".join(skipped)) if skipped else None,
    )
    columns = (
        "variant",
        "engine",
        "accuracy",
        "loss pts",
        "p99@1 ms",
        "p99@16 ms",
        "best req/s",
        "USD/1k req",
        "MB",
        "budget",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("variant", "engine", "budget") else "right", no_wrap=True)
    for row in rows:
        if row.status != "built":
            budget = "skipped"
        else:
            budget = "[red]over[/red]" if row.within_accuracy_budget is False else "ok"
        loss = None if row.accuracy_loss is None else row.accuracy_loss * 100
        best = "-" if row.best_throughput_rps is None else f"{row.best_throughput_rps:,.0f} @{row.best_batch_size}"
        table.add_row(
            row.variant,
            row.engine or "-",
            _fmt(row.accuracy, ".3f"),
            _fmt(loss, "+.1f"),
            _fmt(row.p99_ms_batch_1, ".2f"),
            _fmt(row.p99_ms_batch_16, ".2f"),
            best,
            _fmt(row.cost_per_1k_usd, ".2e"),
            _fmt(row.size_mb, ".2f"),
            budget,
        )
    return table
