"""`infopt dashboard build`: docs/dashboard/index.html and its PNGs from the committed result files."""

from __future__ import annotations

from pathlib import Path

from dashboard import charts, page
from dashboard.sources import (
    OVERLOAD,
    PIPELINE_LATENCY,
    Series,
    Source,
    agent_outcomes,
    benchmark_series,
    gpu_benchmarks,
    ladder_pareto,
    ladders,
    load,
    pipeline_pareto,
    plot_rows_series,
    pointer,
)


def _slug(path: str) -> str:
    return path.replace("benchmarks/results/", "").replace("/", "-").replace(".json", "")


def build(root: Path, out: Path) -> Path:
    """Write `out`/index.html and its charts; returns the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        if old.name != "screenshot.png":
            old.unlink()
    used: dict[str, Source] = {}
    sections: list[str] = []

    found = ladders(root)
    for source in found:
        used[source.path] = source
        image = f"{_slug(source.path)}.png"
        charts.ladder_chart(source.data, out / image, source.provenance, source.path)
        sections.append(page.ladder_section(source, image))
    if not found:
        sections.append(
            '<section id="ladder"><h2>Challenge ladder</h2><p>no ladder results committed yet.</p></section>'
        )

    latency = ['<section id="latency"><h2>Latency vs batch size</h2>']
    pipeline = load(root, PIPELINE_LATENCY)
    if pipeline is not None:
        used[pipeline.path] = pipeline
        image = "latency-pipeline.png"
        charts.latency_chart(
            plot_rows_series(pipeline), out / image, "pipeline benchmark stage", pipeline.provenance, pipeline.path
        )
        latency.append(page.image_block(image, f"{pipeline.path}: served-shape sweep of every variant"))
    for source in gpu_benchmarks(root):
        used[source.path] = source
        image = f"latency-{_slug(source.path)}.png"
        charts.latency_chart(
            benchmark_series(source), out / image, f"GPU run: {source.path}", source.provenance, source.path
        )
        latency.append(page.image_block(image, f"{source.path}: the pipeline's benchmark stage on the GPU"))
    for source in found:
        series = []
        for s, step in enumerate(source.data["steps"]):
            for c, candidate in enumerate(step.get("candidates", [])):
                if candidate.get("kept") and len(candidate.get("sweep", [])) > 2:
                    line = Series(f"{step['index']}. {candidate['name']}")
                    for k, point in enumerate(candidate["sweep"]):
                        where = pointer("steps", s, "candidates", c, "sweep", k)
                        line.points.append(
                            (point["batch_size"], point["latency_p99_ms"], point["throughput_rps"], where)
                        )
                    series.append(line)
        if series:
            image = f"latency-{_slug(source.path)}.png"
            charts.latency_chart(
                series, out / image, f"ladder sweeps ({source.data['device']})", source.provenance, source.path
            )
            latency.append(page.image_block(image, f"{source.path}: sweeps of the configurations each step kept"))
    latency.append("</section>")
    sections.append("\n".join(latency))

    pareto = ['<section id="pareto"><h2>Accuracy vs cost: the Pareto front</h2>']
    points, pareto_source = pipeline_pareto(root)
    if pareto_source is not None and points:
        used[pareto_source.path] = pareto_source
        accuracy_source = load(root, "metrics/accuracy.json")
        if accuracy_source is not None:
            used[accuracy_source.path] = accuracy_source
        image = "pareto-pipeline.png"
        charts.pareto_chart(points, out / image, "pipeline variants", pareto_source.provenance, pareto_source.path)
        note = "" if any(p.low is not None for p in points) else " (this schema has no accuracy intervals)"
        pareto.append(page.image_block(image, f"{pareto_source.path}: each variant at its best throughput{note}"))
        pareto.append(page.pareto_table(points, used))
    for source in found:
        ladder_points = ladder_pareto(source)
        if ladder_points:
            image = f"pareto-{_slug(source.path)}.png"
            charts.pareto_chart(
                ladder_points,
                out / image,
                f"ladder candidates ({source.data['device']})",
                source.provenance,
                source.path,
            )
            pareto.append(page.image_block(image, f"{source.path}: every measured candidate, 95% Wilson intervals"))
            pareto.append(page.pareto_table(ladder_points, used))
    pareto.append("</section>")
    sections.append("\n".join(pareto))

    overload = load(root, OVERLOAD)
    if overload is not None and "cost" in overload.data:
        used[overload.path] = overload
        charts.tenant_cost_chart(overload.data["cost"], out / "tenant-cost.png", overload.provenance, overload.path)
        sections.append(page.tenant_section(overload, "tenant-cost.png"))
    else:
        sections.append('<section id="tenants"><h2>Per-tenant cost</h2><p>no overload result committed.</p></section>')

    outcomes, agent = agent_outcomes(root)
    if agent is not None:
        used[agent.path] = agent
    sections.append(page.agent_section(outcomes, agent))
    sections.append(page.sources_section(list(used.values())))
    target = out / "index.html"
    target.write_text(page.page(sections))
    return target
