"""Fixtures of the challenge tests: a tiny pipeline workspace (teacher, int8, head-pruned variant)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from challenge.engines import EngineSpec
from tests.challenge.workspace import build_ladder_workspace


def engine_spec(folder: Path, **changes: object) -> EngineSpec:
    """An EngineSpec of the model in `folder` (HF eager fp32, one thread) with `changes` on top."""
    values: dict[str, object] = {"family": "hf", "model_dir": str(folder), "variant": "fp32", "threads": 1}
    return EngineSpec.model_validate({**values, **changes})


@pytest.fixture(scope="session")
def ladder_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ladder-workspace")
    with warnings.catch_warnings():  # ONNX export / quantization warnings are expected while building
        warnings.simplefilter("ignore")
        return build_ladder_workspace(root)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny BertForSequenceClassification folder (4 heads, 2 layers) with no tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
    )
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertForSequenceClassification(config).eval().save_pretrained(str(folder))
    return folder
