"""The one-line-per-variant summary: metrics/summary/<variant>.json (DVC metrics), `infopt pipeline summary`, Pareto.

Everything here is derived from the manifest, so the table, the metrics file and the plot always agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from infopt.manifest import BatchPoint, Manifest, Sweep, VariantEntry


@dataclass(frozen=True)
class SummaryRow:
    variant: str
    kind: str
    precision: str
    status: str
    engine: str | None  # the engine of the best-throughput point
    threads: int | None  # of that sweep (the largest thread count measured, so variants compare alike)
    accuracy: float | None
    accuracy_low: float | None
    accuracy_high: float | None
    accuracy_loss: float | None  # paired, vs the baseline
    accuracy_loss_high: float | None  # its upper bound: what the decision reads
    within_accuracy_budget: bool | None  # the non-inferiority decision (None: the baseline itself)
    p99_ms_batch_1: float | None
    p99_ms_batch_16: float | None
    best_throughput_rps: float | None  # median over rounds
    best_throughput_min: float | None
    best_throughput_max: float | None
    best_batch_size: int | None
    cost_per_1k_usd: float | None  # at the best (median) throughput
    size_mb: float | None  # of the best engine's artifact
    skip_reason: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def comparable_sweeps(entry: VariantEntry) -> list[Sweep]:
    """The sweeps measured with the largest thread count of this variant (all engines)."""
    if not entry.sweeps:
        return []
    threads = max(sweep.threads for sweep in entry.sweeps)
    return [sweep for sweep in entry.sweeps if sweep.threads == threads]


def best_point(entry: VariantEntry) -> tuple[Sweep, BatchPoint] | None:
    """(sweep, point) of the highest median throughput over the comparable sweeps and batch sizes."""
    candidates = [(sweep, point) for sweep in comparable_sweeps(entry) for point in sweep.points]
    if not candidates:
        return None
    return max(candidates, key=lambda item: item[1].throughput_rps)


def summary_row(entry: VariantEntry) -> SummaryRow:
    best = best_point(entry)
    sweep, point = best if best else (None, None)
    size_mb = None
    if sweep is not None:
        size_mb = next((a.size_bytes / 2**20 for a in entry.artifacts if a.engine == sweep.engine), None)
    accuracy = entry.quality.accuracy if entry.quality else None
    loss = entry.decision.loss if entry.decision else None

    def p99_at(batch: int) -> float | None:
        found = sweep.point(batch) if sweep else None
        return found.latency_p99_ms if found else None

    return SummaryRow(
        variant=entry.name,
        kind=entry.kind,
        precision=entry.precision,
        status=entry.status,
        engine=sweep.engine if sweep else None,
        threads=sweep.threads if sweep else None,
        accuracy=accuracy.estimate if accuracy else None,
        accuracy_low=accuracy.low if accuracy else None,
        accuracy_high=accuracy.high if accuracy else None,
        accuracy_loss=loss.estimate if loss else None,
        accuracy_loss_high=loss.high if loss else None,
        within_accuracy_budget=entry.decision.within_budget if entry.decision else None,
        p99_ms_batch_1=p99_at(1),
        p99_ms_batch_16=p99_at(16),
        best_throughput_rps=point.throughput_rps if point else None,
        best_throughput_min=point.throughput_rps_min if point else None,
        best_throughput_max=point.throughput_rps_max if point else None,
        best_batch_size=point.batch_size if point else None,
        cost_per_1k_usd=point.cost_per_1k_usd if point else None,
        size_mb=size_mb,
        skip_reason=entry.skip_reason,
    )


def summary_rows(manifest: Manifest) -> list[SummaryRow]:
    return [summary_row(entry) for entry in manifest.variants]


def summary_metrics(row: SummaryRow, device: str, git_sha: str) -> dict[str, float | bool | str]:
    """One variant's few numbers for DVC's metrics commands (metrics/summary/<variant>.json): one row per
    variant in `dvc metrics show`, narrow enough for 120 columns. Whole sweeps and intervals live in the
    manifest and metrics/benchmark.json; the full fingerprint in the manifest."""
    values: dict[str, float | bool | str] = {}
    if row.accuracy is not None:
        values["accuracy"] = round(row.accuracy, 4)
    if row.accuracy_loss_high is not None:
        values["loss_high"] = round(row.accuracy_loss_high, 4)  # upper bound of the paired loss vs the baseline
    if row.best_throughput_rps is not None:
        values["req_per_s"] = round(row.best_throughput_rps, 1)
    if row.p99_ms_batch_16 is not None:
        values["p99_ms_16"] = round(row.p99_ms_batch_16, 2)
    if row.cost_per_1k_usd is not None:
        values["usd_per_1k"] = float(f"{row.cost_per_1k_usd:.3g}")
    if row.within_accuracy_budget is not None:
        values["ok"] = row.within_accuracy_budget
    values["device"] = device
    values["git_sha"] = git_sha[:8]
    return values


def pareto_rows(rows: Sequence[SummaryRow]) -> list[dict[str, object]]:
    """Accuracy vs cost/1k at best throughput; on_front when no other variant is as cheap and as accurate
    with one of the two strictly better."""
    measured = [
        (row, row.accuracy, row.cost_per_1k_usd)
        for row in rows
        if row.accuracy is not None and row.cost_per_1k_usd is not None
    ]
    result: list[dict[str, object]] = []
    for row, accuracy, cost in measured:
        dominated = any(
            other_cost <= cost and other_accuracy >= accuracy and (other_cost < cost or other_accuracy > accuracy)
            for other, other_accuracy, other_cost in measured
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
    base = manifest.baselines
    notes = [
        f"n = {manifest.variants[0].quality.n if manifest.variants[0].quality else '-'} test texts; "
        f"majority class {base.majority.estimate:.3f}, TF-IDF + logistic regression {base.tfidf_logreg.estimate:.3f}",
        f"budget: upper bound of the paired loss vs {manifest.baseline} <= {manifest.max_accuracy_loss * 100:g} points",
    ]
    if skipped:
        notes.append("skipped: " + "; ".join(skipped))
    table = Table(
        title=f"{manifest.model_name} variants on {manifest.device} ({where})",
        caption="\n".join(notes),
    )
    columns = (
        "variant",
        "engine",
        "accuracy (95% CI)",
        "loss pts (upper)",
        "p99@16 ms",
        "best req/s",
        "USD/1k",
        "MB",
        "budget",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("variant", "engine", "budget") else "right")
    for row in rows:
        if row.status != "built":
            budget = "skipped"
        elif row.within_accuracy_budget is None:
            budget = "baseline"
        else:
            budget = "ok" if row.within_accuracy_budget else "[red]over[/red]"
        loss = (
            "-"
            if row.accuracy_loss is None or row.accuracy_loss_high is None
            else f"{row.accuracy_loss * 100:+.2f} ({row.accuracy_loss_high * 100:+.2f})"
        )
        accuracy = (
            "-" if row.accuracy is None else f"{row.accuracy:.3f} [{row.accuracy_low:.3f}, {row.accuracy_high:.3f}]"
        )
        best = "-" if row.best_throughput_rps is None else f"{row.best_throughput_rps:,.0f} @{row.best_batch_size}"
        table.add_row(
            row.variant,
            f"{row.engine}/{row.threads}t" if row.engine else "-",
            accuracy,
            loss,
            _fmt(row.p99_ms_batch_16, ".2f"),
            best,
            _fmt(row.cost_per_1k_usd, ".2e"),
            _fmt(row.size_mb, ".1f"),
            budget,
        )
    return table
