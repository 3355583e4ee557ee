"""Stage 2: the FP32 teacher -> artifacts/models/teacher/ (HF folder, safetensors) + metrics/train.json."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rich.console import Console

from infopt.device import resolve_device
from infopt.fingerprint import collect
from infopt.params import ModelParams, TrainParams, load_params
from infopt.paths import PREPARED_DIR, TEACHER_DIR, TOKENIZER_DIR
from model_builds.data import load_tokenizer, read_labels, read_split
from model_builds.modeling import (
    count_parameters,
    encode_examples,
    evaluate_accuracy,
    load_classifier,
    new_classifier,
    save_classifier,
    train_classifier,
)

METRICS_PATH = Path("metrics/train.json")


def train_teacher(
    model_params: ModelParams,
    hp: TrainParams,
    seed: int,
    device: str,
    data_dir: Path,
    tokenizer_dir: Path,
    out_dir: Path,
) -> dict:
    """Train (or fine-tune `model.pretrained`), save the best epoch to `out_dir`; returns the metrics."""
    labels = read_labels(data_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    train = encode_examples(tokenizer, read_split(data_dir, "train"), model_params.max_seq_len)
    val = encode_examples(tokenizer, read_split(data_dir, "val"), model_params.max_seq_len)
    if model_params.pretrained:
        model = load_classifier(Path(model_params.pretrained), labels)
        origin = f"pretrained:{model_params.pretrained}"
    else:
        model = new_classifier(model_params.architecture, tokenizer, model_params.max_seq_len, labels, seed)
        origin = f"scratch:{model_params.preset}"
    result = train_classifier(model, train, val, hp, seed, device, description="teacher")
    model.to("cpu").float()
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
        "fingerprint": collect(device).model_dump(),
    }


def main() -> None:
    from infopt.tracking import log_stage

    params = load_params("params.yaml")
    device = resolve_device(params.device)
    torch.manual_seed(params.seed)
    metrics = train_teacher(params.model, params.train, params.seed, device, PREPARED_DIR, TOKENIZER_DIR, TEACHER_DIR)
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
