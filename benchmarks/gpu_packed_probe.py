"""Packed tokens vs length-bucketed padding on the GPU: the matmul-rate fraction each engine reaches.

The ladder's best dense engine (length-bucketed sub-batches of CUDA graphs) reached 25 % of the measured
bf16 matmul rate at batch 1024 (benchmarks/results/challenge/cuda/ladder.json). This probe times, on
bert-base's shape (random weights, the pipeline's 45 labels), the same batches of real WordNet-gloss
lengths (the test split, tokenized with the pipeline's tokenizer) through that engine and through the
packed engine (challenge/packed.py) in fp16, bf16 and fp8, checks that packed and padded logits agree,
and counts the FLOPs the requests carry (`challenge.flops`, at each row's own length) against a bf16
matmul measured in the same process. One JSON with the hardware fingerprint.

    python -m benchmarks.gpu_packed_probe --data DIR --tokenizer DIR --out OUT.json     (CUDA only)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAX_LEN = 64
BATCHES = (1024, 2048)
TIMED_CALLS = 20


def _lengths(data: Path, tokenizer: Path) -> np.ndarray:
    from tokenizers import Tokenizer

    texts = [json.loads(line)["text"] for line in (data / "test.jsonl").read_text().splitlines() if line]
    encoder = Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
    return np.array([min(len(e.ids), MAX_LEN) for e in encoder.encode_batch(texts)])


def _batch(lengths: np.ndarray, rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rows of sampled lengths, right-padded to the longest (as the gateway's batcher pads)."""
    chosen = rng.choice(lengths, size=rows)
    width = int(chosen.max())
    ids = rng.integers(5, 8000, size=(rows, width))
    mask = (np.arange(width)[None, :] < chosen[:, None]).astype(np.int64)
    return ids * mask, mask


def _time(engine: Any, batches: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    for ids, mask in batches[:3]:
        engine.infer(ids, mask)
    times = []
    for index in range(TIMED_CALLS):
        ids, mask = batches[index % len(batches)]
        began = time.perf_counter()
        engine.infer(ids, mask)  # returns host logits: the copy back synchronises
        times.append(time.perf_counter() - began)
    return times


@dataclass(frozen=True)
class Probe:
    """What both GPU probes start from: their arguments, the bf16 ceiling, and bert-base's shape saved with
    random weights."""

    args: argparse.Namespace
    ceiling: Any  # challenge.roofline.MatmulRate, measured in this process
    config: Any  # transformers.BertConfig
    folder: Path  # the random bert-base, saved


def start_probe(description: str) -> Probe:
    """argparse, not typer: the GPU host has no typer."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, required=True, help="prepared split folder (test.jsonl)")
    parser.add_argument("--tokenizer", type=Path, required=True, help="tokenizer folder (tokenizer.json)")
    parser.add_argument("--out", type=Path, required=True, help="result JSON")
    args = parser.parse_args()
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from challenge.roofline import matmul_rate

    if not torch.cuda.is_available():
        parser.error("this probe needs a CUDA GPU")
    ceiling = matmul_rate("cuda", 8192, "bfloat16")
    config = BertConfig(vocab_size=8000, num_labels=45, max_position_embeddings=MAX_LEN)
    torch.manual_seed(0)
    folder = Path(tempfile.mkdtemp(prefix="bert-base-"))
    BertForSequenceClassification(config).save_pretrained(str(folder))
    return Probe(args=args, ceiling=ceiling, config=config, folder=folder)


def main() -> None:
    from challenge.config import GRAPH_SIZES, length_buckets
    from challenge.engines import EngineSpec, build_engine, release
    from challenge.flops import BertShape
    from infopt.fingerprint import collect

    probe = start_probe(__doc__.splitlines()[0])
    args, ceiling, folder = probe.args, probe.ceiling, probe.folder
    lengths = _lengths(args.data, args.tokenizer)
    shape = BertShape.from_config(probe.config.to_dict())
    rng = np.random.default_rng(0)
    batches = {rows: [_batch(lengths, rows, rng) for _ in range(5)] for rows in BATCHES}
    sizes = tuple(sorted({*(s for s in GRAPH_SIZES if s <= max(BATCHES)), *BATCHES}))
    base = {"family": "static", "model_dir": str(folder), "variant": "random", "device": "cuda", "graphs": True}
    engines = {
        "fp16 length-bucketed sub-batches": {"precision": "fp16", "split_lengths": True},
        "fp16 packed": {"precision": "fp16", "packed": True},
        "bf16 packed": {"precision": "bf16", "packed": True},
        "fp8 packed": {"precision": "bf16", "linear": "fp8", "packed": True},
    }
    results: dict[str, Any] = {
        "fingerprint": collect("cuda").model_dump(mode="json"),
        "ceiling": ceiling.model_dump(mode="json"),
        "mean_length": float(lengths.mean()),
        "cells": [],
    }
    reference: dict[int, np.ndarray] = {}
    for name, changes in engines.items():
        spec = EngineSpec.model_validate(
            {**base, **changes, "batch_sizes": sizes, "length_buckets": length_buckets(MAX_LEN)}
        )
        try:
            engine = build_engine(spec)
        except Exception as error:  # record the failure and go on with the next engine
            results["cells"].append({"engine": name, "error": f"{type(error).__name__}: {error}"})
            print(name, "failed:", error, flush=True)
            continue
        for rows in BATCHES:
            logits = engine.infer(*batches[rows][0])
            if name.startswith("fp16"):
                reference.setdefault(rows, logits)
            times = np.asarray(_time(engine, batches[rows]))
            attended = float(np.mean([mask.sum() / rows for _, mask in batches[rows]]))
            flops = float(np.mean([[shape.flops(n) for n in mask.sum(1)] for _, mask in batches[rows]]))
            seq_per_s = rows / float(np.median(times))
            cell = {
                "engine": name,
                "batch": rows,
                "p50_ms": float(np.median(times)) * 1000,
                "max_ms": float(times.max()) * 1000,
                "seq_per_s": seq_per_s,
                "mean_attended_tokens": attended,
                "flops_per_seq": flops,
                "fraction_of_bf16_matmul": seq_per_s * flops / ceiling.flops_per_s,
                "max_abs_logit_diff_vs_fp16_padded": float(np.abs(logits - reference[rows]).max()),
                "capture_seconds": getattr(engine, "capture_seconds", None),
            }
            results["cells"].append(cell)
            print(json.dumps(cell), flush=True)
        release(engine)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
