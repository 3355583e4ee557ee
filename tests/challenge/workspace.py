"""A tiny but real pipeline workspace for the ladder: the measuring-stage fixture plus a head-pruned variant.

tests/model_builds/tiny_build.py builds test texts, a WordPiece tokenizer, a random tiny BERT (HF + ONNX),
an INT8 dynamic ONNX copy and a skipped fp8 record; this adds `pruned-heads-25`, pruned with the pipeline's
own `prune_heads_and_ffn` (HF + ONNX folders and its variant.json), and lists it in params.yaml.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ruamel.yaml import YAML

from tests.model_builds.tiny_build import _artifact, _export_onnx, build_workspace


def build_ladder_workspace(root: Path) -> Path:
    import torch
    from transformers import BertForSequenceClassification

    from model_builds.variants.pruned import prune_heads_and_ffn

    build_workspace(root)
    torch.manual_seed(1)
    model = BertForSequenceClassification.from_pretrained(str(root / "artifacts/variants/fp32/hf")).eval()
    details = prune_heads_and_ffn(model, 0.5)
    variant = root / "artifacts/variants/pruned-heads-25"
    hf, onnx_dir = variant / "hf", variant / "onnx"
    model.save_pretrained(str(hf))
    _export_onnx(model, onnx_dir, seq_len=16)
    for folder in (hf, onnx_dir):
        shutil.copytree(root / "artifacts/tokenizer", folder, dirs_exist_ok=True)
    record = {
        "name": "pruned-heads-25",
        "kind": "pruned",
        "precision": "fp32",
        "status": "built",
        "skip_reason": None,
        "artifacts": [
            _artifact(root, "torch", "hf-safetensors", "fp32", hf),
            _artifact(root, "onnxruntime", "onnx", "fp32", onnx_dir),
        ],
        "parameters": sum(p.numel() for p in model.parameters()),
        "sparsity": 0.0,
        "details": {"method": "structured_heads_ffn", **details},
    }
    (variant / "variant.json").write_text(json.dumps(record, indent=2))
    yaml = YAML()
    params_path = root / "params.yaml"
    raw = yaml.load(params_path.read_text())
    raw["variants"].append(
        {"name": "pruned-heads-25", "kind": "pruned", "method": "structured_heads_ffn", "amount": 0.5}
    )
    with params_path.open("w") as handle:
        yaml.dump(raw, handle)
    return root
