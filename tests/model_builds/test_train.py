from __future__ import annotations

import numpy as np
import pytest

from infopt.engines.torch_engine import TorchEngine
from infopt.params import DataParams, ModelParams, TrainParams
from model_builds.prepare import prepare
from model_builds.train import TrainError, majority_gate, train_teacher
from tests.model_builds.conftest import TINY


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


def test_majority_gate_rejects_a_constant_predictor_and_passes_a_good_one() -> None:
    labels = np.array([0] * 300 + [1] * 100)
    train_labels = np.array([0] * 30 + [1] * 10)
    constant = majority_gate(np.zeros_like(labels), labels, train_labels, ["adj.all", "noun.Tops"])
    assert constant["majority_label"] == "adj.all" and constant["majority_accuracy"] == 0.75
    assert not constant["beats_majority"] and constant["difference_low"] <= 0
    good = labels.copy()
    good[:20] = 1  # 95% accurate
    assert majority_gate(good, labels, train_labels, ["adj.all", "noun.Tops"])["beats_majority"]


def test_train_fails_when_the_teacher_cannot_beat_the_majority(tmp_path) -> None:
    """Random labels, 85% of them one class: no model beats the majority significantly, so `train` refuses."""
    rng = np.random.default_rng(0)
    words = ["kernel", "atom", "office", "code", "light", "report", "disk", "lab"]
    rows = ["text,label"] + [
        f"{' '.join(rng.choice(words, size=6))},{'a' if rng.random() < 0.85 else 'b'}" for _ in range(400)
    ]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    data = DataParams(source="csv", path=str(tmp_path / "data.csv"), val_fraction=0.3, test_fraction=0.1)
    model = ModelParams(preset="t", presets={"t": TINY}, max_seq_len=16, vocab_size=100)
    prepare(data, model, 3, tmp_path / "data", tmp_path / "tokenizer")
    train = TrainParams(epochs=1, batch_size=32, lr=1e-3)
    with pytest.raises(TrainError, match="does not beat the majority class significantly"):
        train_teacher(model, train, 3, "cpu", tmp_path / "data", tmp_path / "tokenizer", tmp_path / "teacher")
    relaxed = TrainParams(epochs=1, batch_size=32, lr=1e-3, require_beats_majority=False)
    metrics = train_teacher(model, relaxed, 3, "cpu", tmp_path / "data", tmp_path / "tokenizer", tmp_path / "teacher")
    assert "does not beat" in metrics["majority_gate"]["warning"]
