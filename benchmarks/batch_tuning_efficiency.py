"""Batch tuning: the agent's search (agent/batch_search.py) against the exhaustive sweep, on a real engine.

Goal (issue #9): within 5% of the exhaustive best throughput under the SLA, using at most 40% of the trials.

What runs, on this machine's CPU with one intra-op thread (a deployment with resources.cpu 1):

1. The model: the pipeline's `model.preset` BERT architecture (params.yaml) with random weights, saved as a
   Hugging Face folder and served by the gateway's own torch engine (infopt.engines.factory.load_engine).
   Batch times depend on shapes, not weight values, so no trained artifact is needed; with `--model-dir` the
   benchmark times a real variant's HF folder instead.
2. The texts: WordNet glosses (Debian's wordnet-base, as the pipeline's `data.source: wordnet`), tokenized by a
   WordPiece tokenizer trained on them, batched and padded to each batch's longest row exactly as the benchmark
   stage does (model_builds.benchmark.ServedBatches, `measure_round`, `batch_point`: medians over
   `--repeats` rounds, worst round's p99).
3. **Exhaustive**: every batch size 1..`--max-batch` measured once (the reference table).
   Clock (`--clock`): `cpu` (default) times each batch by the calling thread's CPU time
   (`time.thread_time_ns`; with one intra-op thread torch computes in that thread), which preemption by other
   processes does not inflate; `wall` uses the benchmark stage's own `measure_round` (perf_counter). On the
   shared 2-core machine at load ~3.6 wall-clock batch times swung by 2-3x between neighbouring batch sizes
   (benchmarks/results/batch_tuning_efficiency_wall.json), so neither the exhaustive "best" nor the search's
   pick meant anything; CPU time measures the same work without the neighbours' share.
4. For each SLA (p99 bounds chosen from the exhaustive table so that the boundary falls inside the range), the
   **search** runs live with fresh measurements: its pick is judged by the exhaustive table (its throughput
   there vs the best feasible throughput there; it must be feasible there too). The same search replayed on
   the exhaustive table is reported beside it (no measurement noise: the algorithm's own accuracy).
5. **Referee**: the exhaustive "best" is the maximum of 64 noisy cells, so its own cell overstates it (the
   winner's curse; on the flat part of the curve neighbours differ by less than their round-to-round spread).
   Both picks are measured again, interleaved, `--referee-rounds` times (same clock): the goal's ratio is the
   search pick's throughput over the exhaustive pick's with a bootstrap-over-rounds 95% interval
   (infopt.stats.ratio_interval). Feasibility stays the exhaustive table's (the rule that chose the
   exhaustive best: both picks are judged by the same cells). The goal is met only when the pick is feasible
   there, the interval's LOWER bound is >= 0.95 (non-inferior by 5%) and the search stayed within the trial
   budget. The table ratio is kept beside it, and so is the p99 of all referee batches pooled: over 40 rounds
   the tail is heavier than any 3-round cell shows (what plan_sla's worst-of-3-rounds p99 leaves out).

Writes benchmarks/results/batch_tuning_efficiency.json with the fingerprint and the load average at start.
Run: `python -m benchmarks.batch_tuning_efficiency` (about 2-3 minutes of one core).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.batch_search import search_batch
from agent.measure import BatchBench
from infopt.fingerprint import collect
from infopt.manifest import BatchPoint
from infopt.params import load_params
from infopt.stats import Interval, ratio_interval

RESULT = Path("benchmarks/results/batch_tuning_efficiency.json")
GOAL_RATIO, GOAL_TRIALS = 0.95, 0.40


def corpus(count: int, max_chars: int, seed: int) -> list[str]:
    from model_builds.data import read_wordnet

    examples = read_wordnet(Path("/usr/share/wordnet"), None, max_chars)
    texts = [text for text, _label in examples]
    random.Random(seed).shuffle(texts)
    return texts[:count]


def random_model(folder: Path, preset: dict[str, int], vocab_size: int, max_seq_len: int, labels: int) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab_size,
        max_position_embeddings=max(512, max_seq_len),
        num_labels=labels,
        **preset,
    )
    BertForSequenceClassification(config).save_pretrained(folder)


def cpu_round(infer: Callable[[Any, Any], Any], batches: Any, batch_size: int, config: Any) -> Any:
    """`model_builds.benchmark.measure_round` with the thread's CPU time as the clock (same warm-up and stop rule)."""
    import numpy as np

    from model_builds.benchmark import Round

    stream = batches.stream(batch_size)
    for _ in range(config.warmup_iters):
        ids, mask = next(stream)
        infer(ids, mask)
    if config.warmup_iters:
        infer(ids, np.ones_like(mask))
    latencies: list[float] = []
    widths: list[int] = []
    spent = 0.0
    stopped = False
    while True:
        ids, mask = next(stream)
        began = time.thread_time_ns()
        infer(ids, mask)
        latencies.append((time.thread_time_ns() - began) / 1e6)
        widths.append(int(ids.shape[1]))
        spent = sum(latencies) / 1000.0
        if len(latencies) >= config.min_iters and spent >= config.min_seconds:
            break
        if spent >= config.max_seconds:
            stopped = True
            break
    return Round(latencies_ms=latencies, widths=widths, stopped_by_max_seconds=stopped)


class CpuClockBench(BatchBench):
    def round(self, batch_size: int) -> Any:
        return cpu_round(self.infer, self.batches, batch_size, self.config)


@dataclass
class Refereed:
    """Fresh interleaved rounds of the search's pick and the exhaustive pick."""

    ratio: Interval  # pick throughput / best throughput (mean over rounds), bootstrap over rounds
    pick_rounds: list[float]  # per-round throughput (req/s)
    best_rounds: list[float]
    pick_p99_ms: float  # p99 of every pick batch timed in the referee (all rounds pooled)
    best_p99_ms: float


def referee(bench: BatchBench, pick: int, best: int, rounds: int, seed: int) -> Refereed:
    """Both picks timed again, one round each in turn, `rounds` times, with the sweep's own bench (its clock)."""
    import numpy as np

    from model_builds.benchmark import round_stats

    throughput: dict[int, list[float]] = {pick: [], best: []}
    latencies: dict[int, list[float]] = {pick: [], best: []}
    for index in range(rounds):
        order = (pick, best) if index % 2 == 0 else (best, pick)  # alternate who goes first (drift, caches)
        for size in dict.fromkeys(order):  # the same size once per round when both picks agree
            round_ = bench.round(size)
            throughput[size].append(round_stats(round_, size)["throughput"])
            latencies[size].extend(round_.latencies_ms)
    ratio = ratio_interval(throughput[pick], throughput[best], seed=seed)
    return Refereed(
        ratio=ratio,
        pick_rounds=throughput[pick],
        best_rounds=throughput[best],
        pick_p99_ms=float(np.percentile(latencies[pick], 99)),
        best_p99_ms=float(np.percentile(latencies[best], 99)),
    )


def sla_at_quantile(p99s_ms: list[float], quantile: float) -> float:
    """The SLA at a quantile of the table's p99s, rounded UP to 0.01 ms so the cell that set it still meets it.

    (Rounded to nearest, an SLA of 26.382 ms became 26.38 and made its own cell infeasible by 0.002 ms.)
    """
    ordered = sorted(p99s_ms)
    value = ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]
    return math.ceil(round(value * 100.0, 6)) / 100.0  # round() first: 26.38 * 100 is 2638.0000000000005


def table(points: dict[int, BatchPoint], wait_ms: float) -> list[dict[str, float]]:
    return [
        {
            "batch_size": b,
            "throughput_rps": round(p.throughput_rps, 1),
            "throughput_rps_min_round": round(p.throughput_rps_min, 1),
            "throughput_rps_max_round": round(p.throughput_rps_max, 1),
            "p99_ms_worst_round": round(p.latency_p99_ms_max, 3),
            "predicted_p99_ms": round(wait_ms + p.latency_p99_ms_max, 3),
            "p50_ms": round(p.latency_p50_ms, 3),
            "cost_per_1k_usd": p.cost_per_1k_usd,
        }
        for b, p in sorted(points.items())
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--wait-ms", type=float, default=2.0, help="max_wait_ms added to every p99 (plan_sla)")
    parser.add_argument("--sla-quantiles", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--model-dir", type=Path, default=None, help="a real HF classifier folder instead")
    parser.add_argument("--referee-rounds", type=int, default=40, help="interleaved re-measurements per pick")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    load_at_start = [round(value, 2) for value in os.getloadavg()]
    started = time.time()
    params = load_params("params.yaml")
    max_seq_len = params.model.max_seq_len
    from infopt.engines.factory import load_engine
    from model_builds.benchmark import ServedBatches
    from model_builds.data import encode, train_tokenizer

    texts = corpus(args.texts, params.data.max_chars, params.seed)
    tokenizer = train_tokenizer(texts, params.model.vocab_size, max_seq_len)
    batches = ServedBatches(encode(tokenizer, texts, max_seq_len), int(tokenizer.pad_token_id))
    config = params.benchmark.model_copy(update={"repeats": args.repeats})
    hourly = params.cost.hourly_usd["cpu"]
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model_dir
        if model_dir is None:
            model_dir = Path(scratch) / "model"
            preset = params.model.presets[params.model.preset]
            random_model(model_dir, preset.model_dump(), params.model.vocab_size, max_seq_len, 45)
        engine = load_engine("torch", model_dir, device="cpu", precision="fp32", threads=1)
        kind = CpuClockBench if args.clock == "cpu" else BatchBench
        bench = kind(engine.infer, batches, config, "cpu", hourly, close=engine.close)
        try:
            sizes = list(range(1, args.max_batch + 1))
            exhaustive_began = time.perf_counter()
            exhaustive = {size: bench.measure(size) for size in sizes}
            exhaustive_s = time.perf_counter() - exhaustive_began
            p99s = [args.wait_ms + p.latency_p99_ms_max for p in exhaustive.values()]
            runs: list[dict[str, Any]] = []
            for quantile in args.sla_quantiles:
                sla_ms = sla_at_quantile(p99s, quantile)

                def fits(point: BatchPoint, sla_ms: float = sla_ms) -> bool:
                    return args.wait_ms + point.latency_p99_ms_max <= sla_ms

                feasible = [p for p in exhaustive.values() if fits(p)]
                best = max(feasible, key=lambda p: p.throughput_rps)
                search_began = time.perf_counter()
                live = search_batch(sizes, bench.measure, fits)
                search_s = time.perf_counter() - search_began
                replay = search_batch(sizes, lambda b: exhaustive[b], fits)
                assert live.best is not None and replay.best is not None
                pick = exhaustive[live.best.batch_size]
                ratio = pick.throughput_rps / best.throughput_rps if fits(pick) else 0.0
                replay_ratio = replay.best.throughput_rps / best.throughput_rps
                judged = referee(bench, live.best.batch_size, best.batch_size, args.referee_rounds, seed=len(runs))
                within_budget = live.trials <= GOAL_TRIALS * len(sizes)
                runs.append(
                    {
                        "sla_p99_ms": sla_ms,
                        "sla_quantile_of_exhaustive_p99s": quantile,
                        "exhaustive_best": {
                            "batch_size": best.batch_size,
                            "throughput_rps": round(best.throughput_rps, 1),
                            "largest_feasible_batch": max(p.batch_size for p in feasible),
                        },
                        "search_live": {
                            "measured": live.measured,
                            "trials": live.trials,
                            "trials_share": round(live.trials / len(sizes), 3),
                            "pick": live.best.batch_size,
                            "pick_throughput_rps_live": round(live.best.throughput_rps, 1),
                            "pick_throughput_rps_in_exhaustive": round(pick.throughput_rps, 1),
                            "pick_feasible_in_exhaustive": fits(pick),
                            "ratio_to_exhaustive_best": round(ratio, 4),
                            "seconds": round(search_s, 2),
                        },
                        "referee": {
                            "rounds": len(judged.pick_rounds),
                            "pick_throughput_rps_rounds": [round(v, 1) for v in judged.pick_rounds],
                            "best_throughput_rps_rounds": [round(v, 1) for v in judged.best_rounds],
                            "ratio": round(judged.ratio.estimate, 4),
                            "ratio_ci95": [round(judged.ratio.low, 4), round(judged.ratio.high, 4)],
                            "pick_pooled_p99_ms_plus_wait": round(args.wait_ms + judged.pick_p99_ms, 3),
                            "best_pooled_p99_ms_plus_wait": round(args.wait_ms + judged.best_p99_ms, 3),
                        },
                        "search_replayed_on_exhaustive": {
                            "measured": replay.measured,
                            "trials": replay.trials,
                            "pick": replay.best.batch_size,
                            "ratio_to_exhaustive_best": round(replay_ratio, 4),
                        },
                        "goal_met": fits(pick) and judged.ratio.low >= GOAL_RATIO and within_budget,
                    }
                )
        finally:
            bench.close()
    result = {
        "benchmark": "batch_tuning_efficiency",
        "goal": f"pick within {1 - GOAL_RATIO:.0%} of the exhaustive best throughput under the SLA using at most "
        f"{GOAL_TRIALS:.0%} of the exhaustive trials (judged on the referee's interval: its lower bound >= "
        f"{GOAL_RATIO})",
        "goal_met": all(run["goal_met"] for run in runs),
        "fingerprint": collect("cpu", repo=Path(".")).model_dump(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
        "wall_s": round(time.time() - started, 1),
        "setup": {
            "model": str(args.model_dir)
            if args.model_dir
            else f"BertForSequenceClassification, params model.preset {params.model.preset!r} "
            f"({params.model.presets[params.model.preset].model_dump()}), random weights (timing depends on shapes only)",
            "engine": "torch (infopt.engines.factory.load_engine), fp32, 1 intra-op thread, cpu",
            "texts": f"{len(texts)} WordNet glosses, WordPiece vocab {params.model.vocab_size}, "
            f"max_seq_len {max_seq_len}, padded per batch (model_builds.benchmark.ServedBatches)",
            "clock": "thread CPU time (time.thread_time_ns)" if args.clock == "cpu" else "wall (perf_counter_ns)",
            "measurement": f"{'measure_round with the CPU clock' if args.clock == 'cpu' else 'model_builds.benchmark.measure_round'} x {args.repeats} rounds per batch size "
            f"(min_iters {config.min_iters}, min_seconds {config.min_seconds}, max_seconds {config.max_seconds}); "
            "throughput = median over rounds; p99 = the worst round's (as infopt.sla.plan_sla)",
            "max_wait_ms": args.wait_ms,
            "candidates": f"batch sizes 1..{args.max_batch}",
            "search": "agent/batch_search.py: bisection for the SLA boundary, then golden section below it",
        },
        "exhaustive": {
            "trials": len(sizes),
            "seconds": round(exhaustive_s, 1),
            "points": table(exhaustive, args.wait_ms),
        },
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for run in runs:
        live = run["search_live"]
        print(
            f"SLA p99 {run['sla_p99_ms']} ms: exhaustive best batch {run['exhaustive_best']['batch_size']} "
            f"({run['exhaustive_best']['throughput_rps']} req/s, {len(sizes)} trials); search picked {live['pick']} "
            f"({live['ratio_to_exhaustive_best']:.1%} of it in the table; referee {run['referee']['ratio']:.1%} "
            f"[{run['referee']['ratio_ci95'][0]:.1%}, {run['referee']['ratio_ci95'][1]:.1%}]) in {live['trials']} "
            f"trials ({live['trials_share']:.0%}); "
            f"goal {'met' if run['goal_met'] else 'NOT met'}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
