"""HF folder -> ONNX (input_ids, attention_mask -> logits; dynamic batch and sequence axes).

The model is loaded with eager attention: the SDPA graph gets no fused attention in ONNX Runtime and runs
2-3x slower. torch.onnx.export's TorchScript exporter (dynamo=False) is used because it is fast and
deterministic for BERT here; the export is checked against torch on a padded batch.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

OPSET = 17
SIDE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


class _LogitsOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def copy_side_files(src_dir: Path, dst_dir: Path) -> None:
    """Config and tokenizer files travel with every artifact folder, so each one is self-contained."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    for name in SIDE_FILES:
        if (src_dir / name).is_file():
            shutil.copy2(src_dir / name, dst_dir / name)


def export_onnx(hf_dir: Path, out_dir: Path, max_seq_len: int) -> float:
    """Export `hf_dir` to out_dir/model.onnx (+ config/tokenizer); returns max |logit diff| vs torch."""
    import onnxruntime as ort
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        str(hf_dir), attn_implementation="eager", dtype=torch.float32
    ).eval()
    wrapper = _LogitsOnly(model).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    length = min(16, max_seq_len)
    ids = torch.randint(5, model.config.vocab_size, (2, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, length // 2 :] = 0
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (ids, mask),
            str(out_dir / "model.onnx"),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "logits": {0: "batch"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
        expected = wrapper(ids, mask).numpy()
    copy_side_files(Path(hf_dir), out_dir)
    session = ort.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    (actual,) = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    return float(np.abs(actual - expected).max())
