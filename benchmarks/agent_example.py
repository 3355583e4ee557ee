"""A real `infopt agent propose` run for the docs: a synthetic day of traffic against the pipeline's manifest.

Writes a deterministic, clearly synthetic trace (24 h at 5-minute steps: a diurnal curve per SLA class with
noise and two short spikes, scaled by `--peak-rps`), runs the agent's nodes and the proposal (guardrails,
offline infra plan of `--stack`) exactly as `infopt agent propose --trace` does, and saves the trace, the PR
body and the proposal JSON with the fingerprint under `--out`. Needs `artifacts/manifest.json` (`dvc repro`).

    python -m benchmarks.agent_example --out benchmarks/results/agent_example
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

from agent.context import AgentContext, TraceFileTraffic
from agent.nodes import run_nodes
from agent.proposal import propose
from agent.traffic import TrafficTrace, write_trace

STEP_S = 300.0
SHARES = {"premium": 0.6, "standard": 0.25, "batch": 0.15}  # of each step's total


def synthetic_day(peak_rps: float, seed: int = 0) -> TrafficTrace:
    rng = random.Random(seed)
    rates = []
    for index in range(288):
        hour = index * STEP_S / 3600
        diurnal = 0.25 + 0.75 * max(0.0, math.sin(math.pi * (hour - 6) / 14)) if 6 <= hour <= 20 else 0.25
        spike = 1.6 if index in (150, 151, 205) else 1.0  # two short bursts above the daily peak
        total = peak_rps * diurnal * spike * rng.uniform(0.93, 1.07)
        rates.append({name: round(total * share, 1) for name, share in SHARES.items()})
    return TrafficTrace(step_s=STEP_S, rates=rates, source="synthetic day (benchmarks/agent_example.py)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=Path("artifacts/manifest.json"))
    parser.add_argument("--peak-rps", type=float, default=2400.0, help="the day's peak total request rate")
    parser.add_argument("--stack", default="prod")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/agent_example"))
    args = parser.parse_args()
    from infopt.fingerprint import collect

    args.out.mkdir(parents=True, exist_ok=True)
    trace_path = write_trace(synthetic_day(args.peak_rps), args.out / "traffic.jsonl")
    started = time.monotonic()
    context = AgentContext.load(Path("."), manifest_path=args.manifest, traffic=TraceFileTraffic(trace_path))
    outcomes = run_nodes(context)
    proposal, report = propose(context, outcomes, stack=args.stack)
    summary = {
        "benchmark": "agent_example",
        "trace": str(trace_path),
        "peak_rps": args.peak_rps,
        "manifest": str(args.manifest),
        "outcomes": [json.loads(outcome.model_dump_json()) for outcome in report],
        "proposal": None
        if proposal is None
        else {"id": proposal.id, "branch": proposal.branch, "title": proposal.title},
        "wall_s": round(time.monotonic() - started, 1),
        "fingerprint": collect().model_dump(),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if proposal is not None:
        (args.out / "pr_body.md").write_text(proposal.body)
        print(proposal.body)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
