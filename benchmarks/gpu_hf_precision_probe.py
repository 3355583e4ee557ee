"""Why HF eager fp16/bf16 ran 4-6x slower than fp32 at batch 1 in the H200 ladder (ladder.json, step 2).

Suspect: on Hopper, torch's SDPA may take the cuDNN attention backend for fp16/bf16 (never for fp32), and
cuDNN builds an execution plan per new input shape; with requests of every length from 1 to 64 tokens, a
batch-1 benchmark keeps meeting new shapes. This probe measures bert-base (random weights, the pipeline's
config) in HF eager at batch 1 per precision, over lengths cycling 1..64 twice (first pass: every shape
new; second pass: every shape seen) and at one fixed length, with the cuDNN SDPA backend on and off, plus
the top CUDA/CPU ops of one first pass (torch.profiler). Writes one JSON with the hardware fingerprint.

    python -m benchmarks.gpu_hf_precision_probe --out OUT.json     (CUDA only)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def _pass(model: Any, torch: Any, lengths: list[int]) -> list[float]:
    """Milliseconds of each batch-1 forward (host wall clock around a synchronised call)."""
    times = []
    with torch.inference_mode():
        for length in lengths:
            ids = torch.randint(5, 1000, (1, length), device="cuda")
            mask = torch.ones_like(ids)
            torch.cuda.synchronize()
            began = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            torch.cuda.synchronize()
            times.append((time.perf_counter() - began) * 1000.0)
    return times


def _summary(times: list[float]) -> dict[str, float]:
    import numpy as np

    values = np.asarray(times)
    return {
        "n": len(values),
        "mean_ms": float(values.mean()),
        "p50_ms": float(np.median(values)),
        "max_ms": float(values.max()),
    }


def main() -> None:
    """argparse, not typer: the GPU host has no typer (scripts/gpu_challenge.sh)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="result JSON")
    out: Path = parser.parse_args().out
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from infopt.fingerprint import collect

    if not torch.cuda.is_available():
        parser.error("this probe needs a CUDA GPU")
    cycle = list(range(1, 65))
    results: dict[str, Any] = {"fingerprint": collect("cuda").model_dump(mode="json"), "cells": []}
    for precision, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        for cudnn in (True, False):
            torch.backends.cuda.enable_cudnn_sdp(cudnn)
            torch.manual_seed(0)
            model: Any = BertForSequenceClassification(BertConfig(num_labels=45, max_position_embeddings=512))
            model = model.to(device="cuda", dtype=dtype).eval()
            _pass(model, torch, [16] * 5)  # lazy initialisation at one shape
            cell = {
                "precision": precision,
                "cudnn_sdp": cudnn,
                "fixed_16": _summary(_pass(model, torch, [16] * 64)),
                "cycle_first_pass": _summary(_pass(model, torch, cycle)),
                "cycle_second_pass": _summary(_pass(model, torch, cycle)),
            }
            if cudnn and precision == "fp16":
                from torch.profiler import ProfilerActivity, profile

                fresh = [n + 64 for n in range(1, 33)]  # lengths 65..96: shapes this model has not met yet
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    _pass(model, torch, fresh)
                cell["profile_new_shapes"] = prof.key_averages().table(sort_by="cpu_time_total", row_limit=15)
            results["cells"].append(cell)
            print(json.dumps({k: v for k, v in cell.items() if k != "profile_new_shapes"}), flush=True)
            del model
            torch.cuda.empty_cache()
    torch.backends.cuda.enable_cudnn_sdp(True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
