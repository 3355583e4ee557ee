"""A tiny real pipeline shared by the build-stage tests: 2 fortune categories, a 1-layer BERT, 3 epochs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from infopt.params import (
    ArchitectureParams,
    BaselineVariant,
    DataParams,
    DistilledVariant,
    EvaluateParams,
    Fp8Variant,
    HalfVariant,
    Int8OnnxVariant,
    ModelParams,
    PrunedVariant,
    TrainParams,
)
from model_builds.data import FORTUNES_DIR

TINY = ArchitectureParams(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)


@dataclass
class TinyPipeline:
    root: Path
    data_dir: Path
    tokenizer_dir: Path
    teacher_dir: Path
    data: DataParams
    model: ModelParams
    train: TrainParams
    seed: int
    train_metrics: dict


def tiny_variants() -> list:
    return [
        BaselineVariant(name="fp32"),
        HalfVariant(name="fp16", dtype="float16"),
        HalfVariant(name="bf16", dtype="bfloat16", enabled=False),
        Int8OnnxVariant(name="int8-dynamic", calibration="dynamic", per_channel=True),
        Int8OnnxVariant(name="int8-static", calibration="static", per_channel=False, calibration_samples=32),
        PrunedVariant(name="pruned-l1", method="l1_unstructured", amount=0.4, finetune_epochs=1),
        PrunedVariant(name="pruned-heads", method="structured_heads_ffn", amount=0.25, finetune_epochs=1),
        PrunedVariant(name="pruned-24", method="semi_structured_2_4", amount=0.5, finetune_epochs=1),
        DistilledVariant(
            name="distilled",
            student=ArchitectureParams(
                hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
            ),
            epochs=2,
        ),
        Fp8Variant(name="fp8"),
    ]


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> TinyPipeline:
    folder = Path(os.environ.get("INFOPT_FORTUNES_DIR", FORTUNES_DIR))  # a copy of the files on other hosts
    if not (folder / "computers").is_file():
        pytest.skip(f"Debian package `fortunes` not installed ({folder})")
    from model_builds.prepare import prepare
    from model_builds.train import train_teacher

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny-pipeline")
    data = DataParams(
        source="fortunes",
        path=str(folder),
        categories=["computers", "science"],
        max_per_class=40,
        max_chars=300,
        val_fraction=0.1,
        test_fraction=0.2,
    )
    model = ModelParams(preset="t", presets={"t": TINY}, max_seq_len=32, vocab_size=400)
    # 8 validation texts cannot show a significant margin over the majority class: the gate is tested on its own
    train = TrainParams(epochs=4, batch_size=16, lr=2e-3, require_beats_majority=False)
    prepare(data, model, 7, root / "data", root / "tokenizer")
    metrics = train_teacher(model, train, 7, "cpu", root / "data", root / "tokenizer", root / "teacher")
    return TinyPipeline(root, root / "data", root / "tokenizer", root / "teacher", data, model, train, 7, metrics)


@pytest.fixture(scope="session")
def tiny_builds(tiny_pipeline: TinyPipeline):
    """Every kind of variant built once from the tiny teacher, plus their evaluation on the test split."""
    from rich.console import Console

    from infopt.params import Params
    from model_builds.data import read_labels, read_split
    from model_builds.evaluate import evaluate_builds
    from model_builds.variants.build import build_variants
    from model_builds.variants.context import BuildContext

    p = tiny_pipeline
    params = Params(
        seed=p.seed,
        model=p.model,
        data=p.data,
        train=p.train,
        variants=tiny_variants(),
        sla_classes={"batch": {"timeout_ms": 1000, "priority": 2, "k8s_priority_value": 1}},
    )
    ctx = BuildContext(
        p.teacher_dir, p.data_dir, p.root / "variants", p.root, p.seed, "cpu", p.model.max_seq_len, p.train
    )
    try:
        builds = build_variants(params, ctx, Console(quiet=True))
    finally:
        ctx.close()
    results = evaluate_builds(
        builds,
        "fp32",
        read_split(p.data_dir, "test"),
        len(read_labels(p.data_dir)),
        p.model.max_seq_len,
        EvaluateParams(max_accuracy_loss=0.02, bootstrap_resamples=500),
        ["torch", "onnxruntime"],
        p.root,
        "cpu",
        p.seed,
    )
    return {build.name: build for build in builds}, results, ctx
