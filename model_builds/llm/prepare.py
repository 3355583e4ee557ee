"""Stage llm_prepare: offline corpus -> data/llm/{train,val,test}.jsonl + stats.json, and the tokenizer.

The tokenizer is a byte-level BPE (every byte representable, so no unknown tokens) trained on the TRAIN
split only, with BOS/EOS/PAD and a plain chat template (model_builds.tiny_llama.train_tokenizer, the same
builder the serving tests use). With `llm.pretrained` that model's own tokenizer is copied instead.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from infopt.params import LlmParams, load_params
from infopt.paths import LLM_DATA_DIR, LLM_TOKENIZER_DIR
from model_builds.llm.corpus import load_documents, split_documents, write_split
from model_builds.llm.modeling import context_length
from model_builds.tiny_llama import train_tokenizer

STATS_FILE = "stats.json"


def prepare(llm: LlmParams, seed: int, out_dir: Path, tokenizer_dir: Path) -> dict:
    """Write the splits, their stats and the tokenizer; returns the stats."""
    started = time.perf_counter()
    documents, per_source, licences = load_documents(llm.data)
    splits = split_documents(documents, llm.data, seed)
    for name, texts in splits.items():
        write_split(out_dir / f"{name}.jsonl", texts)
    if tokenizer_dir.exists():
        shutil.rmtree(tokenizer_dir)
    if llm.pretrained:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(llm.pretrained)
        tokenizer_source = f"copied from llm.pretrained {llm.pretrained}"
    else:
        tokenizer = train_tokenizer(splits["train"], llm.vocab_size, context_length(llm.max_seq_len))
        tokenizer_source = f"byte-level BPE trained on the train split, vocab {len(tokenizer)}"
    tokenizer.save_pretrained(tokenizer_dir)
    train_tokens = sum(len(ids) for ids in tokenizer(splits["train"][:2000])["input_ids"])
    sample_chars = sum(len(text) for text in splits["train"][:2000])
    stats = {
        "documents": {name: len(texts) for name, texts in splits.items()},
        "characters": {name: sum(len(text) for text in texts) for name, texts in splits.items()},
        "corpus_documents_per_source": per_source,
        "licences": licences,
        "tokenizer": tokenizer_source,
        "vocab_size": len(tokenizer),
        "chars_per_token": round(sample_chars / max(1, train_tokens), 3),
        "seconds": round(time.perf_counter() - started, 2),
    }
    (out_dir / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def main() -> None:
    params = load_params()
    LLM_DATA_DIR.mkdir(parents=True, exist_ok=True)
    if params.llm is None or not params.llm.enabled:
        for name in ("train", "val", "test"):
            write_split(LLM_DATA_DIR / f"{name}.jsonl", [])
        (LLM_DATA_DIR / STATS_FILE).write_text(json.dumps({"enabled": False}) + "\n")
        LLM_TOKENIZER_DIR.mkdir(parents=True, exist_ok=True)
        return
    stats = prepare(params.llm, params.seed, LLM_DATA_DIR, LLM_TOKENIZER_DIR)
    print(json.dumps(stats["documents"]), stats["tokenizer"])


if __name__ == "__main__":
    main()
