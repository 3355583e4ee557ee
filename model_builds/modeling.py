"""BERT classifiers: config from the params' architecture, one seeded training loop, predict and metrics.

Every builder (teacher, pruning fine-tune, distillation) uses `train_classifier`, so the optimiser,
schedule, seeding and best-epoch selection are the same everywhere.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from infopt.params import ArchitectureParams, TrainParams
from infopt.progress import progress
from model_builds.data import Example, encode, pad_batch

# loss(logits, labels, example_index): the index (rows of the train split in this batch) lets a loss look up
# per-example targets computed once, e.g. the teacher's logits for distillation.
LossFn = Callable[[torch.Tensor, torch.Tensor, np.ndarray], torch.Tensor]
StepHook = Callable[[torch.nn.Module], None]


@dataclass(frozen=True)
class Encoded:
    """A tokenized split: unpadded id lists plus labels; batches are padded on the fly."""

    ids: list[list[int]]
    labels: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return len(self.ids)

    def batches(
        self, batch_size: int, order: np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        order = np.arange(len(self.ids)) if order is None else order
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            ids, mask = pad_batch([self.ids[i] for i in index], self.pad_id)
            yield ids, mask, self.labels[index]

    def length_order(self) -> np.ndarray:
        """Row indices sorted by length (stable): inference batches of similar lengths pad least."""
        return np.argsort([len(row) for row in self.ids], kind="stable")

    def bucketed_order(self, batch_size: int, rng: np.random.Generator, chunk_batches: int = 50) -> np.ndarray:
        """A training order with little padding that is still random: shuffle, sort each chunk of
        `chunk_batches` batches by length, cut it into batches, then shuffle the batches."""
        order = rng.permutation(len(self.ids))
        lengths = np.array([len(row) for row in self.ids])
        chunk = batch_size * chunk_batches
        batches: list[np.ndarray] = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            part = part[np.argsort(lengths[part], kind="stable")]
            batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
        full = [batch for batch in batches if len(batch) == batch_size]
        partial = [batch for batch in batches if len(batch) < batch_size]  # at most one: it goes last
        return np.concatenate([full[i] for i in rng.permutation(len(full))] + partial)


def encode_examples(tokenizer, examples: list[Example], max_seq_len: int) -> Encoded:
    return Encoded(
        ids=encode(tokenizer, [e.text for e in examples], max_seq_len),
        labels=np.array([e.label for e in examples], dtype=np.int64),
        pad_id=int(tokenizer.pad_token_id),
    )


def bert_config(arch: ArchitectureParams, vocab_size: int, max_seq_len: int, labels: list[str], pad_token_id: int):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        intermediate_size=arch.intermediate_size,
        max_position_embeddings=max_seq_len,
        pad_token_id=pad_token_id,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )


def new_classifier(arch: ArchitectureParams, tokenizer, max_seq_len: int, labels: list[str], seed: int):
    """A randomly initialised BertForSequenceClassification; seeded so the init is reproducible."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    config = bert_config(arch, len(tokenizer), max_seq_len, labels, int(tokenizer.pad_token_id))
    return BertForSequenceClassification(config)


def load_classifier(path: Path, labels: list[str] | None = None, **kwargs):
    from transformers import AutoModelForSequenceClassification

    if labels is None:
        return AutoModelForSequenceClassification.from_pretrained(str(path), **kwargs)
    return AutoModelForSequenceClassification.from_pretrained(
        str(path),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        ignore_mismatched_sizes=True,
        **kwargs,
    )


def save_classifier(model, tokenizer, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))


@dataclass
class TrainResult:
    val_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    best_val_accuracy: float = 0.0
    seconds: float = 0.0
    steps: int = 0


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _autocast(device: str):
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def train_classifier(
    model: torch.nn.Module,
    train: Encoded,
    val: Encoded,
    hp: TrainParams,
    seed: int,
    device: str,
    *,
    epochs: int | None = None,
    loss_fn: LossFn | None = None,
    after_step: StepHook | None = None,
    description: str = "train",
) -> TrainResult:
    """AdamW + linear warmup/decay; keeps (and leaves loaded) the epoch with the best val accuracy.

    `loss_fn(logits, labels, example_index)` replaces cross-entropy (distillation);
    `after_step(model)` runs after every optimiser step (pruning masks stay applied).
    """
    from transformers import get_linear_schedule_with_warmup

    epochs = hp.epochs if epochs is None else epochs
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.to(device)
    result = TrainResult()
    best_state = copy.deepcopy(model.state_dict())
    result.best_val_accuracy = evaluate_accuracy(model, val, hp.batch_size, device)
    if epochs == 0:
        result.val_accuracy.append(result.best_val_accuracy)
        return result
    steps_per_epoch = -(-len(train) // hp.batch_size)
    total = steps_per_epoch * epochs
    optimizer = torch.optim.AdamW(_param_groups(model, hp.weight_decay), lr=hp.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(hp.warmup_ratio * total), total)
    loss_fn = loss_fn or (lambda logits, labels, _index: torch.nn.functional.cross_entropy(logits, labels))
    started = time.perf_counter()
    best_seen = -1.0
    with progress(description, total) as tracker:
        for epoch in range(epochs):
            model.train()
            losses = []
            order = train.bucketed_order(hp.batch_size, rng)
            starts = range(0, len(order), hp.batch_size)
            for start, (ids, mask, labels) in zip(starts, train.batches(hp.batch_size, order), strict=True):
                ids_t, mask_t = torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)
                labels_t = torch.from_numpy(labels).to(device)
                with _autocast(device):
                    logits = model(input_ids=ids_t, attention_mask=mask_t).logits.float()
                loss = loss_fn(logits, labels_t, order[start : start + hp.batch_size])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                if after_step is not None:
                    after_step(model)
                losses.append(float(loss.detach()))
                result.steps += 1
                tracker.advance(1, info=f"epoch {epoch + 1}/{epochs} loss {losses[-1]:.3f}")
            val_accuracy = evaluate_accuracy(model, val, hp.batch_size, device)
            result.val_accuracy.append(val_accuracy)
            result.train_loss.append(float(np.mean(losses)))
            if val_accuracy > best_seen:
                best_seen = val_accuracy
                result.best_epoch, result.best_val_accuracy = epoch + 1, val_accuracy
                best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - started
    return result


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, data: Encoded, batch_size: int, device: str) -> np.ndarray:
    model.eval()
    order = data.length_order()
    outputs = []
    for ids, mask, _ in data.batches(batch_size, order):
        with _autocast(device):
            logits = model(
                input_ids=torch.from_numpy(ids).to(device), attention_mask=torch.from_numpy(mask).to(device)
            ).logits
        outputs.append(logits.float().cpu().numpy())
    logits_sorted = np.concatenate(outputs)
    result = np.empty_like(logits_sorted)
    result[order] = logits_sorted  # back to the rows' own order
    return result


def evaluate_accuracy(model: torch.nn.Module, data: Encoded, batch_size: int, device: str) -> float:
    return accuracy(predict_logits(model, data, batch_size, device).argmax(-1), data.labels)


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(predictions) == np.asarray(labels))) if len(labels) else 0.0


def count_parameters(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def count_nonzero_parameters(model: torch.nn.Module) -> int:
    return int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))


def linear_sparsity(model: torch.nn.Module, root: torch.nn.Module | None = None) -> float:
    """Fraction of exactly-zero weights over the nn.Linear layers under `root` (default: the whole model)."""
    zeros = total = 0
    for module in (root or model).modules():
        if isinstance(module, torch.nn.Linear):
            zeros += int((module.weight == 0).sum())
            total += module.weight.numel()
    return zeros / total if total else 0.0
