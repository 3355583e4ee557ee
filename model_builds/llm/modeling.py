"""The causal LM itself: build a Llama from params, train it on packed token blocks (optionally with KD on a
teacher's logits), load any variant folder in torch, and score held-out documents token by token.

Shapes: B = batch, T = tokens, V = vocabulary.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from infopt.params import LlmArchitecture, LlmTrainParams

MIN_CONTEXT = 512  # positions a served model accepts (prompt + output), at least the training window

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class LlmBuildError(ValueError):
    """A model folder or the data cannot be used; the message names the path or the value."""


def context_length(max_seq_len: int) -> int:
    return max(MIN_CONTEXT, max_seq_len)


def new_llama(arch: LlmArchitecture, tokenizer: PreTrainedTokenizerBase, max_seq_len: int, seed: int) -> nn.Module:
    """A randomly initialised LlamaForCausalLM (tied embeddings) sized by `arch`, seeded."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        max_position_embeddings=context_length(max_seq_len),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    return model


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        raise LlmBuildError(f"{folder} holds no tokenizer; run the llm_prepare stage")
    return AutoTokenizer.from_pretrained(str(folder))


def load_causal_lm(folder: Path) -> nn.Module:
    """Any variant folder in torch, float32 compute: plain HF weights, or W8A8 through its int8 arithmetic."""
    from transformers import AutoModelForCausalLM

    from model_builds.llm.quantize import load_w8a8

    config_path = folder / "config.json"
    if not config_path.is_file():
        raise LlmBuildError(f"{folder} has no config.json; not a Hugging Face model folder")
    if "quantization_config" in json.loads(config_path.read_text()):
        return load_w8a8(folder)
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def parameter_count(model: nn.Module) -> int:
    """Distinct parameters and int8 buffers (tied embeddings counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *(b for n, b in model.named_buffers() if n.endswith("weight_q"))]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel()
    return total


# ----------------------------------------------------------------------------- data
def document_ids(tokenizer: PreTrainedTokenizerBase, documents: list[str], max_seq_len: int) -> list[list[int]]:
    """[BOS] + tokens + [EOS] per document, cut to max_seq_len + 1 (inputs and next-token targets)."""
    encoded = tokenizer(documents, add_special_tokens=True, truncation=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [[*ids, eos][: max_seq_len + 1] for ids in encoded]


def pack_blocks(sequences: list[list[int]], block: int) -> torch.Tensor:
    """Concatenate the documents and cut the stream into (N, block + 1) rows (input + shifted target)."""
    stream = np.fromiter((token for ids in sequences for token in ids), dtype=np.int64)
    rows = (len(stream) - 1) // block
    if rows < 1:
        raise LlmBuildError(f"{len(stream)} tokens cannot fill one training block of {block}")
    starts = np.arange(rows) * block
    index = starts[:, None] + np.arange(block + 1)[None, :]
    return torch.from_numpy(stream[index])


# ----------------------------------------------------------------------------- training
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, targets, inputs) -> loss


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, _inputs: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def kd_loss(teacher: nn.Module, temperature: float, alpha: float) -> LossFn:
    """alpha * KL(softmax(t/T) || softmax(s/T)) * T^2 + (1 - alpha) * CE(s, next token), per token.

    The teacher runs on the same block in no-grad mode: its logits over (B, T, V) for every step would not
    fit in memory for a real corpus, so they are computed per batch (the teacher is frozen and in eval
    mode, so this equals precomputing them).
    """

    def loss(logits: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        hard = next_token_loss(logits, targets, inputs)
        if alpha == 0:
            return hard
        with torch.no_grad():
            teacher_logits = teacher(inputs).logits  # (B, T, V)
        vocab = logits.shape[-1]
        soft = F.kl_div(
            F.log_softmax(logits.reshape(-1, vocab) / temperature, dim=-1),
            F.log_softmax(teacher_logits.reshape(-1, vocab) / temperature, dim=-1),
            reduction="batchmean",
            log_target=True,
        ) * (temperature**2)
        return alpha * soft + (1 - alpha) * hard

    return loss


@dataclass(frozen=True)
class TrainResult:
    steps: int
    tokens: int
    seconds: float
    losses: list[float]  # training loss per step
    val_loss: float  # mean next-token NLL on the validation blocks


def _batches(blocks: torch.Tensor, batch_size: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(blocks), generator=generator)
    position = 0
    for _ in range(steps):
        if position + batch_size > len(order):
            order, position = torch.randperm(len(blocks), generator=generator), 0
        yield blocks[order[position : position + batch_size]]
        position += batch_size


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up to `peak`, then cosine decay to 10 % of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_causal_lm(
    model: nn.Module,
    train_blocks: torch.Tensor,
    val_blocks: torch.Tensor,
    train: LlmTrainParams,
    *,
    steps: int,
    seed: int,
    device: str,
    loss_fn: LossFn = next_token_loss,
) -> TrainResult:
    """AdamW over `steps` random batches of blocks; returns the loss curve and the validation loss."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    losses: list[float] = []
    started = time.perf_counter()
    for step, batch in enumerate(_batches(train_blocks, train.batch_size, steps, seed)):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, train.lr, train.warmup_steps)
        batch = batch.to(device)
        inputs, targets = batch[:, :-1], batch[:, 1:]  # (B, T)
        logits = model(inputs).logits  # (B, T, V)
        loss = loss_fn(logits, targets, inputs)
        if not torch.isfinite(loss):
            raise LlmBuildError(f"training loss is {loss.item()} at step {step}; lower llm.train.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(round(loss.item(), 5))
    seconds = time.perf_counter() - started
    model.eval()
    val_loss = block_loss(model, val_blocks, train.batch_size, device)
    return TrainResult(steps, steps * train.batch_size * (train_blocks.shape[1] - 1), seconds, losses, val_loss)


@torch.no_grad()
def block_loss(model: nn.Module, blocks: torch.Tensor, batch_size: int, device: str) -> float:
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        batch = blocks[start : start + batch_size].to(device)
        logits = model(batch[:, :-1]).logits
        total += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1), reduction="sum"
        ).item()
        count += batch[:, 1:].numel()
    return total / max(1, count)


# ----------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class DocumentScores:
    """Per held-out document: summed NLL (nats), next-token hits, scored tokens. Same order as the input."""

    nll: np.ndarray
    correct: np.ndarray
    tokens: np.ndarray


@torch.no_grad()
def score_documents(
    model: nn.Module, sequences: list[list[int]], pad_id: int, batch_size: int, device: str
) -> DocumentScores:
    """Every token after BOS (EOS included) is a target, predicted from the tokens before it."""
    nll = np.zeros(len(sequences))
    correct = np.zeros(len(sequences))
    tokens = np.zeros(len(sequences))
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # similar lengths pad less
    model.to(device).eval()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(sequences[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, index in enumerate(chunk):
            seq = sequences[index]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1]).logits.float()  # (B, T-1, V)
        targets, valid = ids[:, 1:], mask[:, 1:].bool()  # (B, T-1)
        token_nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T-1)
        hits = (logits.argmax(dim=-1) == targets) & valid
        nll[chunk] = (token_nll * valid).sum(dim=1).cpu().numpy()
        correct[chunk] = hits.sum(dim=1).cpu().numpy()
        tokens[chunk] = valid.sum(dim=1).cpu().numpy()
    return DocumentScores(nll, correct, tokens)
