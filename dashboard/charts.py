"""The dashboard's PNG charts (matplotlib, Agg), each with the provenance of its numbers in a footer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dashboard.sources import ParetoPoint, Provenance, Series


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, figure: Any, path: Path, provenance: Provenance | None, source: str) -> Path:
    note = source
    if provenance is not None:
        note = f"{source}: {provenance.hardware}, git {provenance.git_sha}, {provenance.date}"
    figure.text(0.01, 0.005, note, fontsize=6, alpha=0.7)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(figure)
    return path


def ladder_chart(ladder: dict[str, Any], path: Path, provenance: Provenance, source: str) -> Path:
    """Throughput, p99, cost per 1k and accuracy (95% interval) of the configuration carried after each step."""
    plt = _pyplot()
    steps = [step for step in ladder["steps"] if step.get("carried")]
    labels = [f"{step['index']}. {step['key']}" for step in steps]
    carried = [step["carried"] for step in steps]
    x = list(range(len(steps)))
    figure, axes = plt.subplots(2, 2, figsize=(11, 7))
    model = [c["point"]["throughput_rps"] for c in carried]
    gateway = [c.get("gateway_throughput_rps") or 0 for c in carried]
    axes[0][0].bar([i - 0.2 for i in x], model, width=0.4, label="model level")
    axes[0][0].bar([i + 0.2 for i in x], gateway, width=0.4, label="through the gateway")
    axes[0][0].set_yscale("log")
    axes[0][0].set_title("throughput (req/s, log)")
    axes[0][0].legend(fontsize=7)
    axes[0][1].plot(x, [c["point"]["latency_p99_ms"] for c in carried], marker="o", label="model p99 per batch")
    gateway_p99 = [(i, c["gateway_p99_ms"]) for i, c in zip(x, carried, strict=True) if c.get("gateway_p99_ms")]
    if gateway_p99:
        axes[0][1].plot([i for i, _ in gateway_p99], [v for _, v in gateway_p99], "s", label="gateway p99 per request")
    sla = ladder.get("context", {}).get("p99_sla_ms")
    if sla:
        axes[0][1].axhline(sla, linestyle="--", color="red", alpha=0.5, label=f"premium SLA {sla:g} ms")
    axes[0][1].set_yscale("log")
    axes[0][1].set_title("p99 latency (ms, log)")
    axes[0][1].legend(fontsize=7)
    axes[1][0].bar(x, [c["point"]["cost_per_1k_usd"] for c in carried], color="tab:green")
    axes[1][0].set_yscale("log")
    axes[1][0].set_title("USD per 1k requests (model level, log)")
    accuracy = [c["accuracy"]["accuracy"] for c in carried]
    axes[1][1].errorbar(
        x,
        [a["estimate"] for a in accuracy],
        yerr=[[a["estimate"] - a["low"] for a in accuracy], [a["high"] - a["estimate"] for a in accuracy]],
        fmt="o",
        capsize=4,
    )
    axes[1][1].set_title("test accuracy (95% Wilson interval)")
    for axis in (axes[0][0], axes[0][1], axes[1][0], axes[1][1]):
        axis.set_xticks(x)
        axis.set_xticklabels(labels, rotation=25, ha="right", fontsize=7)
        axis.grid(True, alpha=0.3)
    where = ladder["fingerprint"].get("gpu_name") or ladder["fingerprint"].get("cpu_model")
    figure.suptitle(f"challenge ladder on {ladder['device']} ({where}){' - reduced' if ladder.get('reduced') else ''}")
    return _save(plt, figure, path, provenance, source)


def latency_chart(series: Sequence[Series], path: Path, title: str, provenance: Provenance | None, source: str) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(9, 5))
    for line in series:
        points = sorted(line.points)
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=line.label)
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("batch size")
    axis.set_ylabel("p99 latency per batch (ms)")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    if series:
        axis.legend(fontsize=6, ncol=3)
    return _save(plt, figure, path, provenance, source)


def pareto_chart(
    points: Sequence[ParetoPoint], path: Path, title: str, provenance: Provenance | None, source: str
) -> Path:
    """Accuracy vs cost per 1k; 95% intervals where the source has them; the front joined."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(9, 5.5))
    for point in points:
        yerr = None
        if point.low is not None and point.high is not None:
            yerr = [[point.accuracy - point.low], [point.high - point.accuracy]]
        axis.errorbar(
            [point.cost], [point.accuracy], yerr=yerr, fmt="*" if point.on_front else "o", capsize=3,
            markersize=10 if point.on_front else 5,
        )  # fmt: skip
        if point.on_front or len(points) <= 8:  # label the front; unlabelled dots stay readable when many
            axis.annotate(
                point.label, (point.cost, point.accuracy), textcoords="offset points", xytext=(4, 3), fontsize=6
            )
    on_front = sorted((p for p in points if p.on_front), key=lambda p: p.cost)
    if on_front:
        axis.plot([p.cost for p in on_front], [p.accuracy for p in on_front], "--", alpha=0.6, label="Pareto front")
        axis.legend(fontsize=7)
    axis.set_xscale("log")
    axis.set_xlabel("USD per 1k requests (log)")
    axis.set_ylabel("test accuracy")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    return _save(plt, figure, path, provenance, source)


def tenant_cost_chart(report: dict[str, Any], path: Path, provenance: Provenance, source: str) -> Path:
    plt = _pyplot()
    tenants = report["tenants"]
    names = [t["tenant"] for t in tenants]
    x = list(range(len(names)))
    figure, axis = plt.subplots(figsize=(7, 4))
    splits = [
        ("equal_split", "equal split (spec)"),
        ("request_split", "by requests"),
        ("device_time_split", "by device time"),
    ]
    for offset, (key, label) in zip((-0.27, 0.0, 0.27), splits, strict=True):
        axis.bar([i + offset for i in x], [t.get(key) or 0 for t in tenants], width=0.27, label=label)
    axis.set_xticks(x)
    axis.set_xticklabels(names)
    axis.set_ylabel(f"{report['currency']} for the run")
    axis.set_title(f"per-tenant cost ({report['device']}, {report['device_hours'] * 3600:.0f} device-seconds)")
    axis.legend(fontsize=7)
    axis.grid(True, axis="y", alpha=0.3)
    return _save(plt, figure, path, provenance, source)
