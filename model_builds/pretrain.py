"""Stage `pretrain`: masked-language-model pre-training of the encoder on offline text -> artifacts/models/pretrained.

There is no model hub here, and a 110M-parameter bert-base trained from scratch on one labelled task can
stay at chance. Pre-training it first with the MLM objective (BERT's: 15% of tokens chosen, of those 80%
[MASK], 10% a random token, 10% unchanged) on unlabelled text gives the fine-tune a start that knows the
language. The corpus is the TRAIN and validation texts of the prepared split (never test) plus, where
asked, Debian's fortune files; all offline, licences in model_builds/data.py.

Off by default (the CPU tiny preset trains from scratch within its budget); with `pretrain.enabled: false`
the stage writes only a marker, and `train` starts from random weights.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from infopt.device import resolve_device
from infopt.fingerprint import collect
from infopt.params import ModelParams, Params, PretrainParams, load_params
from infopt.paths import PREPARED_DIR, PRETRAINED_DIR, TOKENIZER_DIR
from infopt.progress import progress
from model_builds.data import FORTUNES_DIR, encode, load_tokenizer, pad_batch, read_fortunes, read_split
from model_builds.modeling import bert_config

METRICS_PATH = Path("metrics/pretrain.json")
HELD_OUT = 512  # corpus lines kept aside to report masked-token accuracy
FORTUNE_TOPICS = ("computers", "science", "work", "politics", "literature", "wisdom", "people", "linuxcookie")


def corpus(pretrain: PretrainParams, data_dir: Path, max_chars: int) -> list[str]:
    """Unlabelled training text: the prepared train + val texts, and the fortune files where asked."""
    texts: list[str] = []
    if "wordnet" in pretrain.corpora:
        texts += [example.text for split in ("train", "val") for example in read_split(data_dir, split)]
    if "fortunes" in pretrain.corpora and FORTUNES_DIR.is_dir():
        topics = [topic for topic in FORTUNE_TOPICS if (FORTUNES_DIR / topic).is_file()]
        texts += [text for text, _ in read_fortunes(FORTUNES_DIR, topics, max_chars)]
    return texts


def mask_tokens(
    ids: torch.Tensor, attention: torch.Tensor, tokenizer: Any, probability: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: (inputs, labels) with labels -100 where no prediction is asked."""
    labels = ids.clone()
    special = torch.tensor([tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id], device=ids.device)
    candidates = (attention == 1) & ~torch.isin(ids, special)
    chosen = (torch.rand(ids.shape, generator=generator, device=ids.device) < probability) & candidates
    labels[~chosen] = -100
    roll = torch.rand(ids.shape, generator=generator, device=ids.device)
    inputs = ids.clone()
    inputs[chosen & (roll < 0.8)] = tokenizer.mask_token_id
    random_tokens = torch.randint(len(tokenizer), ids.shape, generator=generator, device=ids.device)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = random_tokens[swap]
    return inputs, labels


def pretrain_encoder(params: Params, device: str, out_dir: Path) -> dict[str, Any]:
    """Train a BertForMaskedLM until max_steps or max_seconds; save it; return the metrics."""
    from transformers import BertForMaskedLM, get_linear_schedule_with_warmup

    config: PretrainParams = params.pretrain
    model_params: ModelParams = params.model
    tokenizer = load_tokenizer(TOKENIZER_DIR)
    texts = corpus(config, PREPARED_DIR, params.data.max_chars)
    rng = np.random.default_rng(params.seed)
    order = rng.permutation(len(texts))
    held_out = [texts[i] for i in order[:HELD_OUT]]
    train_rows = encode(tokenizer, [texts[i] for i in order[HELD_OUT:]], model_params.max_seq_len)
    held_rows = encode(tokenizer, held_out, model_params.max_seq_len)
    torch.manual_seed(params.seed)
    generator = torch.Generator(device=device).manual_seed(params.seed)
    bert = bert_config(
        model_params.architecture, len(tokenizer), model_params.max_seq_len, ["x"], tokenizer.pad_token_id
    )
    model: Any = BertForMaskedLM(bert)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * config.max_steps), config.max_steps
    )
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    )
    losses: list[float] = []
    began = time.perf_counter()
    step, epoch_order, cursor = 0, rng.permutation(len(train_rows)), 0
    with progress("pretrain (MLM)", config.max_steps) as tracker:
        while step < config.max_steps and time.perf_counter() - began < config.max_seconds:
            if cursor + config.batch_size > len(epoch_order):
                epoch_order, cursor = rng.permutation(len(train_rows)), 0
            index = epoch_order[cursor : cursor + config.batch_size]
            cursor += config.batch_size
            ids, attention = (
                torch.from_numpy(a).to(device)
                for a in pad_batch([train_rows[i] for i in index], tokenizer.pad_token_id)
            )
            inputs, labels = mask_tokens(ids, attention, tokenizer, config.mask_probability, generator)
            model.train()
            with autocast:
                loss = model(input_ids=inputs, attention_mask=attention, labels=labels).loss
            if not math.isfinite(float(loss.detach())):
                raise RuntimeError(f"MLM loss became {float(loss)} at step {step}: lower pretrain.lr (now {config.lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            step += 1
            tracker.advance(1, info=f"loss {losses[-1]:.3f}")
    seconds = time.perf_counter() - began
    accuracy = held_out_accuracy(model, held_rows, tokenizer, config, device, params.seed)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.to("cpu").float().save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    window = max(1, len(losses) // 20)
    return {
        "enabled": True,
        "device": device,
        "steps": step,
        "seconds": seconds,
        "stopped_by": "max_steps" if step >= config.max_steps else "max_seconds",
        "corpus_texts": len(texts),
        "corpora": list(config.corpora),
        "loss_first": float(np.mean(losses[:window])),
        "loss_last": float(np.mean(losses[-window:])),
        "loss_curve": [float(np.mean(losses[i : i + window])) for i in range(0, len(losses), window)],
        "held_out_masked_accuracy": accuracy,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "fingerprint": collect(device).model_dump(),
    }


@torch.inference_mode()
def held_out_accuracy(
    model: torch.nn.Module, rows: list[list[int]], tokenizer: Any, config: PretrainParams, device: str, seed: int
) -> float:
    """Share of masked held-out tokens the model restores (a sanity check that MLM learned something)."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed + 1)
    hits = total = 0
    for start in range(0, len(rows), 128):
        ids, attention = (
            torch.from_numpy(a).to(device) for a in pad_batch(rows[start : start + 128], tokenizer.pad_token_id)
        )
        inputs, labels = mask_tokens(ids, attention, tokenizer, config.mask_probability, generator)
        logits = model(input_ids=inputs, attention_mask=attention).logits
        asked = labels != -100
        hits += int((logits.argmax(-1)[asked] == labels[asked]).sum())
        total += int(asked.sum())
    return hits / max(1, total)


def main() -> None:
    params = load_params("params.yaml")
    METRICS_PATH.parent.mkdir(parents=True, exist_ok=True)
    if not params.pretrain.enabled:
        if PRETRAINED_DIR.exists():
            shutil.rmtree(PRETRAINED_DIR)
        PRETRAINED_DIR.mkdir(parents=True)
        (PRETRAINED_DIR / "DISABLED").write_text("pretrain.enabled is false: train starts from random weights\n")
        METRICS_PATH.write_text(json.dumps({"enabled": False}, indent=2) + "\n")
        Console().print("[bold]pretrain[/]: disabled (pretrain.enabled: false)")
        return
    device = resolve_device(params.device)
    metrics = pretrain_encoder(params, device, PRETRAINED_DIR)
    METRICS_PATH.write_text(json.dumps(metrics, indent=2) + "\n")
    Console().print(
        f"[bold]pretrain[/]: {metrics['steps']} MLM steps in {metrics['seconds']:.0f}s on {device}; loss "
        f"{metrics['loss_first']:.2f} -> {metrics['loss_last']:.2f}; held-out masked accuracy "
        f"{metrics['held_out_masked_accuracy']:.3f} -> {PRETRAINED_DIR}"
    )


if __name__ == "__main__":
    main()
