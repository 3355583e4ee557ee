"""Stage 2: the FP32 teacher -> artifacts/models/teacher/ (HF folder, safetensors) + metrics/train.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from infopt.device import resolve_device
from infopt.fingerprint import collect
from infopt.params import ModelParams, TrainParams, load_params
from infopt.paths import PREPARED_DIR, PRETRAINED_DIR, TEACHER_DIR, TOKENIZER_DIR
from infopt.stats import paired_difference
from model_builds.baselines import majority_label
from model_builds.data import load_tokenizer, read_labels, read_split
from model_builds.modeling import (
    count_parameters,
    encode_examples,
    evaluate_accuracy,
    load_classifier,
    new_classifier,
    predict_logits,
    save_classifier,
    train_classifier,
)

METRICS_PATH = Path("metrics/train.json")


class TrainError(RuntimeError):
    """The trained teacher is unusable; the message says why and what to change."""


def majority_gate(
    predictions: np.ndarray, labels: np.ndarray, train_labels: np.ndarray, names: list[str]
) -> dict[str, float | bool | str]:
    """Does the teacher beat always answering the most frequent train label? Decided on the paired interval."""
    majority = majority_label(train_labels)
    paired = paired_difference(predictions == labels, np.full_like(labels, majority) == labels, seed=0)
    return {
        "accuracy": float(np.mean(predictions == labels)),
        "majority_label": names[majority],
        "majority_accuracy": float(np.mean(labels == majority)),
        "difference_low": paired.difference.low,
        "difference_high": paired.difference.high,
        "beats_majority": paired.difference.low > 0,
    }


def train_teacher(
    model_params: ModelParams,
    hp: TrainParams,
    seed: int,
    device: str,
    data_dir: Path,
    tokenizer_dir: Path,
    out_dir: Path,
    encoder_dir: Path | None = None,
) -> dict:
    """Train from scratch, or fine-tune `model.pretrained` (a user's HF folder) or `encoder_dir` (this
    pipeline's MLM-pretrained encoder); save the best epoch to `out_dir`; returns the metrics."""
    labels = read_labels(data_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    train = encode_examples(tokenizer, read_split(data_dir, "train"), model_params.max_seq_len)
    val = encode_examples(tokenizer, read_split(data_dir, "val"), model_params.max_seq_len)
    if model_params.pretrained:
        model = load_classifier(Path(model_params.pretrained), labels)
        origin = f"pretrained:{model_params.pretrained}"
    elif encoder_dir is not None:
        model = load_classifier(encoder_dir, labels)
        origin = f"mlm-pretrained:{encoder_dir}"
    else:
        model = new_classifier(model_params.architecture, tokenizer, model_params.max_seq_len, labels, seed)
        origin = f"scratch:{model_params.preset}"
    result = train_classifier(model, train, val, hp, seed, device, description="teacher")
    model.to("cpu").float()
    gate = majority_gate(predict_logits(model, val, hp.batch_size, "cpu").argmax(-1), val.labels, train.labels, labels)
    if not gate["beats_majority"]:
        message = (
            f"the teacher does not beat the majority class significantly on the validation split: accuracy "
            f"{gate['accuracy']:.4f} vs majority ({gate['majority_label']}) {gate['majority_accuracy']:.4f}, "
            f"lower bound of the difference {gate['difference_low']:+.4f} <= 0. It learned nothing usable: check "
            "the data, the learning rate and the epochs (train.require_beats_majority: false downgrades this to a warning)"
        )
        if hp.require_beats_majority:
            raise TrainError(message)
        gate["warning"] = message
    save_classifier(model, tokenizer, out_dir)
    return {
        "origin": origin,
        "device": device,
        "epochs": hp.epochs,
        "val_accuracy_per_epoch": result.val_accuracy,
        "train_loss_per_epoch": result.train_loss,
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "val_accuracy_check": evaluate_accuracy(model, val, hp.batch_size, "cpu"),
        "steps": result.steps,
        "seconds": result.seconds,
        "parameters": count_parameters(model),
        "n_train": len(train),
        "n_val": len(val),
        "majority_gate": gate,
        "fingerprint": collect(device).model_dump(),
    }


def main() -> None:
    from infopt.tracking import log_stage

    params = load_params("params.yaml")
    device = resolve_device(params.device)
    torch.manual_seed(params.seed)
    encoder = PRETRAINED_DIR if params.pretrain.enabled else None
    metrics = train_teacher(
        params.model, params.train, params.seed, device, PREPARED_DIR, TOKENIZER_DIR, TEACHER_DIR, encoder
    )
    METRICS_PATH.parent.mkdir(parents=True, exist_ok=True)
    METRICS_PATH.write_text(json.dumps(metrics, indent=2) + "\n")
    curves = {"val_accuracy": metrics["val_accuracy_per_epoch"], "loss": metrics["train_loss_per_epoch"]}
    log_stage(params, params.baseline.name, "train", metrics, curves=curves, prefix="train_")
    Console().print(
        f"[bold]train[/]: best val accuracy {metrics['best_val_accuracy']:.3f} at epoch {metrics['best_epoch']} "
        f"in {metrics['seconds']:.1f}s on {device} -> {TEACHER_DIR}"
    )


if __name__ == "__main__":
    main()
