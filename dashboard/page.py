"""HTML of the dashboard: plain tables and <img> charts, no script, no external resource.

Every number is a cell made by `num`: it carries `data-source` (the committed file), `data-pointer` (the
JSON pointer into it), `data-format` (the Python format spec used) and `data-value` (the value read), so a
test can check each number on the page against its file.
"""

from __future__ import annotations

import html
from typing import Any

from challenge.report import flops_rate
from dashboard.sources import Source, pointer, resolve

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 36px; }
table { border-collapse: collapse; margin: 10px 0 18px; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.provenance { color: #555; font-size: 0.85em; } img { max-width: 100%; border: 1px solid #eee; }
.met { color: #17692b; font-weight: 600; } .missed { color: #a11; font-weight: 600; } .none { color: #777; }
"""


def esc(text: object) -> str:
    return html.escape(str(text))


def num(source: Source, path: str, fmt: str) -> str:
    """A table cell holding the number at `path` in `source`, tagged with where it came from."""
    try:
        value = resolve(source.data, path)
    except (KeyError, IndexError, TypeError):
        value = None
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return '<td class="num none">-</td>'
    return (
        f'<td class="num" data-source="{esc(source.path)}" data-pointer="{esc(path)}" data-format="{esc(fmt)}" '
        f'data-value="{value!r}">{esc(format(value, fmt))}</td>'
    )


def provenance_line(source: Source, extra: str = "") -> str:
    where = source.provenance
    return (
        f'<p class="provenance">source <code>{esc(source.path)}</code>: {esc(where.hardware)}, git '
        f"<code>{esc(where.git_sha)}</code>, {esc(where.date)}{esc(extra)}</p>"
    )


def ladder_section(source: Source, image: str) -> str:
    data = source.data
    device = data["device"]
    rows = []
    for s, step in enumerate(data["steps"]):
        carried = step.get("carried")
        if not carried:
            rows.append(
                f"<tr><td>{step['index']}. {esc(step['key'])}</td><td colspan='11'>{esc(step['status'])}: {esc(step.get('reason') or '')}</td></tr>"
            )
            continue
        base = pointer("steps", s, "carried")
        decision = (carried["accuracy"] or {}).get("decision")
        loss = num(source, base + "/accuracy/decision/loss/high", "+.4f") if decision else "<td>baseline</td>"
        verdict = "" if not decision else ("within" if decision["within_budget"] else "OVER")
        rows.append(
            "<tr>"
            f"<td>{step['index']}. {esc(step['key'])}</td><td>{esc(carried['candidate'])}</td>"
            + num(source, base + "/point/batch_size", "d")
            + num(source, base + "/point/throughput_rps", ",.0f")
            + num(source, base + "/point/latency_p99_ms", ".2f")
            + num(source, base + "/gateway_throughput_rps", ",.0f")
            + num(source, base + "/gateway_p99_ms", ".1f")
            + num(source, base + "/point/cost_per_1k_usd", ".2e")
            + num(source, base + "/accuracy/accuracy/estimate", ".4f")
            + num(source, base + "/accuracy/accuracy/low", ".4f")
            + num(source, base + "/accuracy/accuracy/high", ".4f")
            + loss
            + f"<td>{verdict}</td>"
            + num(source, base + "/throughput_gain", ",.1f")
            + num(source, base + "/roofline/fraction", ".1%")
            + "</tr>"
        )
    targets = []
    for t, target in enumerate(data.get("targets", [])):
        met = target.get("met")
        label = '<span class="none">not measured</span>' if met is None else (
            '<span class="met">met</span>' if met else '<span class="missed">not met</span>'
        )  # fmt: skip
        targets.append(
            f"<tr><td>{esc(target['description'])}</td>"
            + num(source, pointer("targets", t, "value"), ",.3g")
            + num(source, pointer("targets", t, "threshold"), "g")
            + f"<td>{label}</td><td>{esc(target['source'])}</td></tr>"
        )
    ceilings = ", ".join(
        f"{esc(name)} <code>{esc(flops_rate(rate['flops_per_s']))}</code> ({esc(rate['dtype'])} {rate['n']}^3)"
        for name, rate in data.get("roofline", {}).items()
    )
    skipped = "".join(f"<li>{esc(item['what'])}: {esc(item['reason'])}</li>" for item in data.get("skipped", []))
    title = f"Challenge ladder: {device}{' (reduced form)' if data.get('reduced') else ''}"
    return f"""
<section id="ladder-{esc(device)}{"-reduced" if data.get("reduced") else ""}">
<h2>{esc(title)}</h2>
{provenance_line(source, f"; status {data['status']}; wall {data.get('wall_s', 0):.0f} s")}
<p>Ceiling measured in the same run: {ceilings}. Premium SLA p99 {esc(data["context"].get("p99_sla_ms"))} ms,
max wait {esc(data["context"].get("max_wait_ms"))} ms ({esc(data["context"].get("max_wait_source"))}).</p>
<img src="{esc(image)}" alt="ladder chart {esc(device)}">
<table><tr><th>step</th><th>carried configuration</th><th>batch</th><th>model req/s</th><th>model p99 ms</th>
<th>gateway req/s</th><th>gateway p99 ms</th><th>USD / 1k</th><th>accuracy</th><th>95% low</th><th>95% high</th>
<th>loss vs step 1 (upper)</th><th>decision</th><th>gain x</th><th>roofline</th></tr>
{"".join(rows)}
</table>
<h3>Targets</h3>
<table><tr><th>target</th><th>value</th><th>threshold</th><th>result</th><th>how</th></tr>{"".join(targets)}</table>
<details><summary>skipped in this run</summary><ul>{skipped}</ul></details>
</section>"""


def image_block(image: str, caption: str) -> str:
    return f'<figure><img src="{esc(image)}" alt="{esc(caption)}"><figcaption class="provenance">{esc(caption)}</figcaption></figure>'


def pareto_table(rows: list[Any], sources: dict[str, Source]) -> str:
    """The points on the front, each number tagged with its file."""
    cells = []
    for point in rows:
        if not point.on_front:
            continue
        interval = "no interval in this source" if point.low is None else f"[{point.low:.4f}, {point.high:.4f}]"
        cells.append(
            f"<tr><td>{esc(point.label)}</td>"
            + num(sources[point.source], point.accuracy_pointer, ".4f")
            + f"<td>{esc(interval)}</td>"
            + num(sources[point.cost_source], point.cost_pointer, ".2e")
            + "</tr>"
        )
    if not cells:
        return ""
    header = "<tr><th>on the front</th><th>accuracy</th><th>95% interval</th><th>USD / 1k</th></tr>"
    return "<table>" + header + "".join(cells) + "</table>"


def tenant_section(source: Source, image: str) -> str:
    report = source.data["cost"]
    rows = []
    for t, tenant in enumerate(report["tenants"]):
        base = pointer("cost", "tenants", t)
        rows.append(
            f"<tr><td>{esc(tenant['tenant'])}</td><td>{esc(tenant.get('cost_center') or '-')}</td>"
            + num(source, base + "/requests", ",d")
            + num(source, base + "/equal_split", ".3e")
            + num(source, base + "/request_split", ".3e")
            + num(source, base + "/device_time_split", ".3e")
            + "</tr>"
        )
    return f"""
<section id="tenants"><h2>Per-tenant cost</h2>
{provenance_line(source, f"; variant {source.data.get('variant')}, total " + format(report["total_cost"], ".3e") + f" {report['currency']}")}
<img src="{esc(image)}" alt="per-tenant cost">
<table><tr><th>tenant</th><th>cost center</th><th>requests</th><th>equal split</th><th>by requests</th><th>by device time</th></tr>
{"".join(rows)}</table></section>"""


def agent_section(outcomes: list[dict[str, Any]], source: Source | None) -> str:
    if source is None:
        return (
            '<section id="agent"><h2>Agent recommendations</h2><p id="agent-none">none yet: no '
            "<code>benchmarks/results/agent/latest.json</code> is committed.</p></section>"
        )
    items = []
    for outcome in outcomes:
        kind = outcome.get("outcome", "recommendation")
        changes = "".join(
            f"<li><code>{esc(c.get('path'))}</code>: {esc(c.get('old'))} &rarr; {esc(c.get('new'))}</li>"
            for c in outcome.get("changes") or []
        )
        text = outcome.get("title") or outcome.get("reason") or ""
        items.append(
            f"<li><b>{esc(kind)}</b> ({esc(outcome.get('node', '?'))}): {esc(text)}"
            f"<br><span class='provenance'>{esc(outcome.get('summary', ''))}</span><ul>{changes}</ul></li>"
        )
    body = "".join(items) or "<li>the file lists no outcomes</li>"
    return f'<section id="agent"><h2>Agent recommendations</h2>{provenance_line(source)}<ul>{body}</ul></section>'


def sources_section(sources: list[Source]) -> str:
    rows = "".join(
        f"<tr><td><code>{esc(s.path)}</code></td><td>{esc(s.provenance.hardware)}</td>"
        f"<td><code>{esc(s.provenance.git_sha)}</code></td><td>{esc(s.provenance.date)}</td></tr>"
        for s in sources
    )
    return (
        '<section id="sources"><h2>Sources</h2><table><tr><th>file</th><th>hardware</th><th>git</th><th>date</th></tr>'
        f"{rows}</table></section>"
    )


def page(sections: list[str]) -> str:
    body = "\n".join(sections)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>infopt dashboard</title><style>{STYLE}</style></head>
<body>
<h1>infopt: measured inference optimization</h1>
<p>Built by <code>infopt dashboard build</code> from committed result files only. Every number is tagged with
the file and JSON pointer it comes from (<code>data-source</code>, <code>data-pointer</code>); every source
states its hardware, git SHA and date.</p>
{body}
</body></html>
"""
