"""Stage llm_benchmark: in-process (torch) static-batch generation of every LLM variant that torch runs at
its served precision -> metrics/llm/benchmark.json.

One cell = one batch size B: B real prompts of `prompt_tokens` tokens from the test split, then greedy
decoding of exactly `output_tokens` tokens (`min_new_tokens`, so EOS cannot end it early), repeated
`min_iters` times or until `max_seconds`. Each repetition is one latency sample of B requests served
together, so a BatchPoint's throughput is requests (generations) per second and its cost is per 1k
generations; tokens/s is recorded beside it. A deployment's SLA plan comes from infopt.sla, as for the classifier.

The W8A8 variant runs here through its torch reference (the int8 arithmetic in float32 matmuls, see
quantize.py), filed under the engine name `torch-w8a8-reference`: slower than vLLM's oneDNN int8 kernels,
so the SLA plan from its sweep gives a conservative HPA target (scale out earlier), never a speed claim for int8;
benchmarks/llm_serving.py times every variant as vLLM serves it. Serving-level numbers (TTFT, TPOT,
goodput under load) come from that benchmark, not from this stage.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import torch

from infopt.device import resolve_device
from infopt.fingerprint import collect
from infopt.manifest import Sweep
from infopt.params import LlmBenchmarkParams, Params, load_params
from infopt.paths import LLM_DATA_DIR, LLM_TOKENIZER_DIR
from model_builds.benchmark import Round, batch_point
from model_builds.llm.corpus import read_split
from model_builds.llm.modeling import load_causal_lm, load_tokenizer
from model_builds.llm.record import BENCHMARK_JSON, read_builds
from model_builds.llm.tracking import log_llm_stage

ENGINE = {"int8_w8a8": "torch-w8a8-reference"}  # kind -> engine name of its sweep; others: torch
ENGINE_NOTES = {
    "torch-w8a8-reference": "the int8 arithmetic in float32 matmuls (quantize.W8A8Linear): slower than vLLM's int8 "
    "kernels, so its knees are a conservative HPA target, not a speed measurement of int8"
}
MEMORY_NOTE = "peak_memory_mb = process RSS sampled after every repetition, minus the RSS before the cell"

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase, documents: list[str], prompt_tokens: int, count: int
) -> torch.Tensor:
    """(count, prompt_tokens) real prompts: the test split's token stream cut into equal pieces."""
    stream: list[int] = []
    for ids in tokenizer(documents, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        if len(stream) >= prompt_tokens * count:
            break
    if len(stream) < prompt_tokens:
        raise ValueError(f"the test split has {len(stream)} tokens; a prompt needs {prompt_tokens}")
    rows = [stream[(i * prompt_tokens) % (len(stream) - prompt_tokens) :][:prompt_tokens] for i in range(count)]
    return torch.tensor(rows, dtype=torch.long)


def measure_generation(
    model: torch.nn.Module, prompts: torch.Tensor, settings: LlmBenchmarkParams, pad_id: int, hourly_usd: float
) -> dict[str, Any]:
    """One cell: latency percentiles of generating settings.output_tokens for the batch `prompts`."""
    batch = len(prompts)
    mask = torch.ones_like(prompts)
    process = psutil.Process()

    def generate() -> None:
        with torch.no_grad():
            out = model.generate(
                input_ids=prompts,
                attention_mask=mask,
                max_new_tokens=settings.output_tokens,
                min_new_tokens=settings.output_tokens,
                do_sample=False,
                pad_token_id=pad_id,
            )
        if out.shape[1] != prompts.shape[1] + settings.output_tokens:
            raise RuntimeError(f"generated {out.shape[1] - prompts.shape[1]} tokens, wanted {settings.output_tokens}")

    for _ in range(settings.warmup_iters):
        generate()
    baseline_rss = process.memory_info().rss
    peak = baseline_rss
    latencies: list[float] = []
    started = time.perf_counter()
    while len(latencies) < settings.min_iters:
        begin = time.perf_counter()
        generate()
        latencies.append((time.perf_counter() - begin) * 1000.0)
        peak = max(peak, process.memory_info().rss)
        if time.perf_counter() - started > settings.max_seconds and len(latencies) >= 2:
            break  # a slow cell: fewer repetitions, recorded in `iterations`
    # One round of repetitions: the point's spread fields equal its medians (rounds=1 says so).
    measured = Round(
        latencies_ms=latencies, widths=[int(prompts.shape[1])] * len(latencies), stopped_by_max_seconds=False
    )
    point = batch_point(batch, [measured], max(0.0, (peak - baseline_rss) / 2**20), hourly_usd)
    return {"point": point, "output_tokens_per_s": round(point.throughput_rps * settings.output_tokens, 2)}


def run_benchmark(params: Params, root: Path = Path(".")) -> dict[str, Any]:
    llm = params.llm
    assert llm is not None
    settings = llm.benchmark
    device = resolve_device(params.device)
    torch.set_num_threads(settings.threads)
    tokenizer = load_tokenizer(root / LLM_TOKENIZER_DIR)
    prompts = prompt_ids(
        tokenizer, read_split(root / LLM_DATA_DIR, "test"), settings.prompt_tokens, max(settings.batch_sizes)
    )
    hourly = params.cost.hourly_usd[device]
    variants: dict[str, Any] = {}
    for build in read_builds(llm, root):
        if build.status != "built":
            continue
        engine = ENGINE.get(build.kind, "torch")
        model = load_causal_lm(root / build.artifacts[0].path)
        if build.precision in ("bf16", "fp16"):
            model = model.to(torch.bfloat16 if build.precision == "bf16" else torch.float16)
        model.to(device).eval()
        cells = [
            measure_generation(model, prompts[:batch].to(device), settings, tokenizer.pad_token_id, hourly)
            for batch in settings.batch_sizes
        ]
        points = [cell["point"] for cell in cells]
        sweep = Sweep(engine=engine, threads=settings.threads, device=device, shape="generation", points=points)  # type: ignore[arg-type]
        variants[build.name] = {
            "engine": engine,
            "sweeps": [sweep.model_dump()],
            "output_tokens_per_s": {
                str(p.batch_size): c["output_tokens_per_s"] for p, c in zip(points, cells, strict=True)
            },
        }
        print(build.name, [(p.batch_size, p.latency_p50_ms) for p in points])
    return {
        "device": device,
        "engine": "torch (transformers generate, greedy, static batch)",
        "prompt_tokens": settings.prompt_tokens,
        "output_tokens": settings.output_tokens,
        "threads": settings.threads,
        "memory_note": MEMORY_NOTE,
        "engine_notes": ENGINE_NOTES,
        "fingerprint": collect(device).model_dump(),
        "variants": variants,
    }


def main() -> None:
    params = load_params()
    BENCHMARK_JSON.parent.mkdir(parents=True, exist_ok=True)
    if params.llm is None or not params.llm.enabled:
        BENCHMARK_JSON.write_text(json.dumps({"enabled": False}) + "\n")
        return
    report = run_benchmark(params)
    BENCHMARK_JSON.write_text(json.dumps(report, indent=2) + "\n")
    for name, entry in report["variants"].items():
        for point in entry["sweeps"][0]["points"]:
            size = point["batch_size"]
            log_llm_stage(
                params,
                name,
                "llm_benchmark",
                {
                    f"batch_{size}_throughput_req_sec": point["throughput_rps"],
                    f"batch_{size}_latency_p99_ms": point["latency_p99_ms"],
                    f"batch_{size}_cost_per_1k_usd": point["cost_per_1k_usd"],
                    f"batch_{size}_output_tokens_per_sec": entry["output_tokens_per_s"][str(size)],
                },
            )


if __name__ == "__main__":
    main()
