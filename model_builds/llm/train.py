"""Stage llm_train: the teacher, a Llama trained on next-token prediction over the packed train split,
saved as a standard Hugging Face folder (FP32 safetensors + tokenizer) -> artifacts/llm/teacher.

With `llm.pretrained` the user's own folder becomes the teacher unchanged (no training), so the variants,
quality and serving steps run on a real model of the user's choosing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from infopt.device import resolve_device
from infopt.params import LlmParams, load_params
from infopt.paths import LLM_DATA_DIR, LLM_METRICS_DIR, LLM_TEACHER_DIR, LLM_TOKENIZER_DIR
from model_builds.llm.corpus import read_split
from model_builds.llm.modeling import (
    block_loss,
    document_ids,
    load_causal_lm,
    load_tokenizer,
    new_llama,
    pack_blocks,
    parameter_count,
    train_causal_lm,
)
from model_builds.llm.tracking import log_llm_stage

TRAIN_JSON = LLM_METRICS_DIR / "train.json"

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def blocks_of(
    split: str, tokenizer: PreTrainedTokenizerBase, max_seq_len: int, data_dir: Path = LLM_DATA_DIR
) -> torch.Tensor:
    return pack_blocks(document_ids(tokenizer, read_split(data_dir, split), max_seq_len), max_seq_len)


def train_teacher(
    llm: LlmParams, seed: int, device: str, out: Path, tokenizer_dir: Path, data_dir: Path = LLM_DATA_DIR
) -> dict[str, Any]:
    """Train (or copy `llm.pretrained`) into `out`; returns the metrics written to metrics/llm/train.json."""
    tokenizer = load_tokenizer(tokenizer_dir)
    val_blocks = blocks_of("val", tokenizer, llm.max_seq_len, data_dir)
    if out.exists():
        shutil.rmtree(out)
    if llm.pretrained:
        shutil.copytree(llm.pretrained, out)
        model = load_causal_lm(out)
        return {
            "source": f"llm.pretrained {llm.pretrained} (not trained here)",
            "parameters": parameter_count(model),
            "val_loss": round(block_loss(model, val_blocks, llm.train.batch_size, device), 5),
            "device": device,
        }
    train_blocks = blocks_of("train", tokenizer, llm.max_seq_len, data_dir)
    model = new_llama(llm.architecture, tokenizer, llm.max_seq_len, seed)
    result = train_causal_lm(
        model, train_blocks, val_blocks, llm.train, steps=llm.train.steps, seed=seed, device=device
    )
    model.to("cpu").save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {
        "source": f"trained here from scratch, preset {llm.preset}",
        "preset": llm.preset,
        "parameters": parameter_count(model),
        "steps": result.steps,
        "train_tokens": result.tokens,
        "train_blocks_available": len(train_blocks),
        "epochs": round(result.steps * llm.train.batch_size / len(train_blocks), 3),
        "seconds": round(result.seconds, 2),
        "tokens_per_second": round(result.tokens / result.seconds, 1),
        "first_loss": result.losses[0],
        "final_loss": result.losses[-1],
        "val_loss": round(result.val_loss, 5),
        "val_perplexity": round(float(torch.tensor(result.val_loss).exp()), 3),
        "loss_curve": result.losses,
        "device": device,
    }


def main() -> None:
    params = load_params()
    llm = params.llm
    TRAIN_JSON.parent.mkdir(parents=True, exist_ok=True)
    if llm is None or not llm.enabled:
        LLM_TEACHER_DIR.mkdir(parents=True, exist_ok=True)
        TRAIN_JSON.write_text(json.dumps({"enabled": False}) + "\n")
        return
    torch.set_num_threads(llm.train.threads)
    device = resolve_device(params.device)
    metrics = train_teacher(llm, params.seed, device, LLM_TEACHER_DIR, LLM_TOKENIZER_DIR)
    TRAIN_JSON.write_text(json.dumps(metrics, indent=2) + "\n")
    curve = metrics.pop("loss_curve", None)
    log_llm_stage(
        params, llm.baseline.name, "llm_train", metrics, curves={"loss": curve} if curve else None, prefix="train_"
    )
    print({key: metrics[key] for key in ("parameters", "val_loss") if key in metrics})


if __name__ == "__main__":
    main()
