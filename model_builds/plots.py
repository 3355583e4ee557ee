"""PNG plots of the pipeline (matplotlib, Agg backend): latency vs batch, and the accuracy/cost Pareto front."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def footer(fingerprint: dict[str, Any]) -> str:
    """One line naming where the plotted numbers were measured (the fingerprint, shortened)."""
    where = fingerprint.get("gpu_name") or fingerprint.get("cpu_model")
    return (
        f"{fingerprint.get('device')} {where}, {fingerprint.get('cpu_count')} cores, "
        f"git {str(fingerprint.get('git_sha'))[:10]}, {fingerprint.get('timestamp')}"
    )


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_plot(rows: Sequence[dict[str, Any]], path: Path, title: str, note: str = "") -> None:
    """p99 latency (log scale) vs batch size, one line per variant/engine."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 5))
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        series.setdefault(row["series"], []).append((row["batch_size"], row["latency_p99_ms"]))
    for label, values in series.items():
        values.sort()
        axis.plot([x for x, _ in values], [y for _, y in values], marker="o", label=label)
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("batch size")
    axis.set_ylabel("p99 latency per batch (ms)")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    if series:
        axis.legend(fontsize=7, ncol=2)
    _save(plt, figure, path, note)


def _save(plt: Any, figure: Any, path: Path, note: str) -> None:
    """PNG with the provenance note (machine, git SHA) in the bottom corner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if note:
        figure.text(0.01, 0.005, note, fontsize=6, alpha=0.7)
    figure.tight_layout(rect=(0, 0.02, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def pareto_plot(rows: Sequence[dict[str, Any]], path: Path, title: str, note: str = "") -> None:
    """Accuracy vs cost per 1k requests at each variant's best throughput; the Pareto front joined."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 5))
    for row in rows:
        marker = "*" if row["on_front"] else "o"
        axis.scatter(row["cost_per_1k_usd"], row["accuracy"], marker=marker, s=140 if row["on_front"] else 50)
        axis.annotate(
            f"{row['variant']} ({row['engine']})",
            (row["cost_per_1k_usd"], row["accuracy"]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    front = sorted((row for row in rows if row["on_front"]), key=lambda row: row["cost_per_1k_usd"])
    if front:
        axis.plot(
            [row["cost_per_1k_usd"] for row in front],
            [row["accuracy"] for row in front],
            "--",
            alpha=0.6,
            label="Pareto front",
        )
        axis.legend()
    axis.set_xlabel("cost per 1k requests (USD) at best throughput")
    axis.set_ylabel("test accuracy")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    _save(plt, figure, path, note)
