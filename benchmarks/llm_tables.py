"""Markdown tables of the LLM path, generated from the committed result files (never typed by hand):
quality (metrics/llm/quality.json), the in-process generation sweep (metrics/llm/benchmark.json), the
serving sweep (benchmarks/results/llm_serving.json) and the framework comparison
(benchmarks/results/framework_comparison.json).

    python -m benchmarks.llm_tables            # all tables that have a result file
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.framework_comparison import markdown as comparison_markdown

QUALITY = Path("metrics/llm/quality.json")
VARIANTS = Path("metrics/llm/variants.json")
TRAIN = Path("metrics/llm/train.json")
BENCHMARK = Path("metrics/llm/benchmark.json")
SERVING = Path("benchmarks/results/llm_serving.json")
COMPARISON = Path("benchmarks/results/framework_comparison.json")


def _interval(entry: dict[str, Any] | None, scale: float = 1.0, digits: int = 2) -> str:
    if not entry:
        return "-"
    return f"{entry['estimate'] * scale:.{digits}f} [{entry['low'] * scale:.{digits}f}, {entry['high'] * scale:.{digits}f}]"


def quality_table(root: Path = Path(".")) -> str:
    quality = json.loads((root / QUALITY).read_text())
    variants = json.loads((root / VARIANTS).read_text()).get("variants", {})
    train = json.loads((root / TRAIN).read_text())
    first = next(iter(quality["variants"].values()))
    lines = [
        f"LLM variants (`metrics/llm/quality.json`): {first['documents']} held-out documents, {first['tokens']} tokens; "
        f"{int(quality['confidence'] * 100)}% intervals by a bootstrap over documents ({quality['bootstrap_resamples']} "
        f"resamples), paired vs {quality['baseline']}; within budget = upper bounds of perplexity increase <= "
        f"{quality['max_perplexity_increase'] * 100:g}% and of accuracy loss <= {quality['max_accuracy_loss'] * 100:g} points. "
        f"Teacher: {train.get('parameters')} parameters, {train.get('train_tokens')} training tokens "
        f"({train.get('source')}).",
        "",
        "| variant | precision | MB | perplexity [95% CI] | next-token acc. % [95% CI] | perplexity increase % [95% CI] | accuracy loss (pts) [95% CI] | within budget |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in quality["variants"].items():
        build = variants.get(name, {})
        size = build.get("size_bytes")
        within = entry.get("within_budget")
        lines.append(
            f"| {name} | {build.get('precision', '-')} | {size / 2**20:.1f} | "
            f"{_interval(entry['perplexity'], digits=1)} | {_interval(entry['next_token_accuracy'], 100)} | "
            f"{_interval(entry.get('perplexity_increase'), 100)} | {_interval(entry.get('accuracy_loss'), 100)} | "
            f"{'baseline' if within is None else 'yes' if within else 'no'} |"
            if size
            else f"| {name} | - | - | - | - | - | - | - |"
        )
    return "\n".join(lines) + "\n"


def benchmark_table(root: Path = Path(".")) -> str:
    report = json.loads((root / BENCHMARK).read_text())
    fp = report["fingerprint"]
    lines = [
        f"In-process generation (`metrics/llm/benchmark.json`, {fp['cpu_model']}, {fp['cpu_count']} cores, "
        f"{report['threads']} thread(s), git {fp['git_sha'][:10]}): {report['prompt_tokens']} prompt + "
        f"{report['output_tokens']} output tokens, static batches, torch generate.",
        "",
        "| variant | batch | p50 (ms) | p99 (ms) | generations/s | output tok/s |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in report["variants"].items():
        engine = entry["engine"]
        for point in entry["points"][engine]:
            size = point["batch_size"]
            label = name if engine == "torch" else f"{name} ({engine}: not a speed measurement)"
            lines.append(
                f"| {label} | {size} | {point['latency_p50_ms']:.1f} | {point['latency_p99_ms']:.1f} | "
                f"{point['throughput_rps']:.2f} | {entry['output_tokens_per_s'][str(size)]:.1f} |"
            )
    return "\n".join(lines) + "\n"


def serving_table(root: Path = Path(".")) -> str:
    report = json.loads((root / SERVING).read_text())
    fp = report["fingerprint"]
    lines = [
        f"LLM serving (`benchmarks/results/llm_serving.json`, variant {report['variant']}, {report['path']}, "
        f"{fp['cpu_model']}, {fp['cpu_count']} cores, git {fp['git_sha'][:10]}, load average at start "
        f"{report['load_average_at_start']}): {report['prompt_tokens']} prompt + {report['output_tokens']} output "
        f"tokens, {report['requests_per_point']} requests a point, streamed; SLO TTFT <= {report['slo']['ttft_ms']:g} ms "
        f"and TPOT <= {report['slo']['tpot_ms']:g} ms.",
        "",
        "| load | TTFT p50 / p99 (ms) | TPOT p50 / p99 (ms) | ITL p50 (ms) | e2e p50 / p95 / p99 (ms) | output tok/s | req/s | goodput (req/s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for point in report["points"]:
        ttft, tpot, itl, e2e = point["ttft_ms"], point["tpot_ms"], point["itl_ms"], point["e2e_ms"]
        lines.append(
            f"| {point['load']} | {ttft['p50']} / {ttft['p99']} | {tpot['p50']} / {tpot['p99']} | {itl['p50']} | "
            f"{e2e['p50']} / {e2e['p95']} / {e2e['p99']} | {point['output_tokens_per_s']} | "
            f"{point['request_throughput_rps']} | {point['goodput_rps']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    for path, render in (
        (QUALITY, lambda: quality_table()),
        (BENCHMARK, lambda: benchmark_table()),
        (SERVING, lambda: serving_table()),
        (COMPARISON, lambda: comparison_markdown(json.loads(COMPARISON.read_text()))),
    ):
        if path.is_file():
            print(render())


if __name__ == "__main__":
    main()
