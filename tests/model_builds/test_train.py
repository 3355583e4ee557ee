from __future__ import annotations

import numpy as np

from infopt.engines.torch_engine import TorchEngine
from model_builds.modeling import accuracy, macro_f1


def test_teacher_is_a_loadable_hf_folder(tiny_pipeline) -> None:
    p = tiny_pipeline
    assert (p.teacher_dir / "model.safetensors").is_file() and (p.teacher_dir / "tokenizer.json").is_file()
    engine = TorchEngine(p.teacher_dir)
    assert engine.model.config.id2label == {0: "computers", 1: "science"}
    assert engine.model.config.max_position_embeddings >= p.model.max_seq_len
    logits = engine.infer(np.array([[2, 10, 11, 3]]), np.ones((1, 4), dtype=np.int64))
    assert logits.shape == (1, 2) and logits.dtype == np.float32


def test_train_metrics_record_every_epoch_and_the_best(tiny_pipeline) -> None:
    metrics = tiny_pipeline.train_metrics
    assert len(metrics["val_accuracy_per_epoch"]) == tiny_pipeline.train.epochs
    assert metrics["best_val_accuracy"] == max(metrics["val_accuracy_per_epoch"])
    assert metrics["val_accuracy_check"] == metrics["best_val_accuracy"]  # the saved model is the best epoch
    assert metrics["fingerprint"]["device"] == "cpu"


def test_macro_f1_matches_hand_computed_value() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    predictions = np.array([0, 1, 1, 1, 0])
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: 0
    assert macro_f1(predictions, labels, 3) == (0.5 + 0.8 + 0.0) / 3
    assert accuracy(predictions, labels) == 0.6
