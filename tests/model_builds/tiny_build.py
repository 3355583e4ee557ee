"""A tiny but real pipeline workspace for the measuring-stage tests.

Builds what prepare/train/variants/evaluate leave behind, at toy size: test texts, a trained WordPiece
tokenizer, a random tiny BertForSequenceClassification (HF folder + ONNX export), an INT8 dynamic ONNX
copy, a skipped fp8 variant, metrics/accuracy.json and a params.yaml naming those variants.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

from ruamel.yaml import YAML

from infopt.hashing import tree_sha256, tree_size

REPO = Path(__file__).resolve().parents[2]
LABELS = ["computers", "science"]
WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "while",
    "kernel",
    "code",
    "compiles",
    "and",
    "atoms",
    "split",
    "under",
    "light",
    "quickly",
]


def _texts(count: int) -> list[str]:
    return [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(5 + i % 20)) for i in range(count)]


def _artifact(root: Path, engine: str, fmt: str, precision: str, folder: Path) -> dict:
    return {
        "engine": engine,
        "format": fmt,
        "precision": precision,
        "path": folder.relative_to(root).as_posix(),
        "sha256": tree_sha256(folder),
        "size_bytes": tree_size(folder),
    }


def _tokenizer(texts: list[str], out: Path) -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer.train_from_iterator(texts, trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.save_pretrained(str(out))


def _export_onnx(model, out: Path, seq_len: int) -> None:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    ids = torch.ones(2, seq_len, dtype=torch.long)
    mask = torch.ones(2, seq_len, dtype=torch.long)

    class Wrapper(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    with warnings.catch_warnings():  # TracerWarnings of the HF mask helpers: expected when tracing
        warnings.simplefilter("ignore")
        _export(Wrapper(model).eval(), ids, mask, out)


def _export(module, ids, mask, out: Path) -> None:
    import torch

    torch.onnx.export(
        module,
        (ids, mask),
        str(out / "model.onnx"),
        dynamo=False,
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            "logits": {0: "batch"},
        },
        opset_version=17,
    )


def _interval(value: float) -> dict:
    return {"estimate": value, "low": value - 0.25, "high": value + 0.25, "confidence": 0.95}


def _quality(engine: str, accuracy: float) -> dict:
    return {
        "engine": engine,
        "execution_device": "cpu",
        "n": 12,
        "accuracy": _interval(accuracy),
        "macro_f1": _interval(0.4),
    }


def write_params(root: Path, **benchmark: object) -> None:
    yaml = YAML()
    raw = yaml.load((REPO / "params.yaml").read_text())
    raw["variants"] = [
        {"name": "fp32", "kind": "baseline"},
        {"name": "int8-dynamic", "kind": "int8_onnx", "calibration": "dynamic", "per_channel": True},
        {"name": "fp8", "kind": "fp8"},
    ]
    raw["deployments"] = [dict(item, variant="int8-dynamic") for item in raw["deployments"]]
    raw["device"] = "cpu"
    raw["model"]["max_seq_len"] = 16
    raw["benchmark"] = {
        "batch_sizes": [1, 4],
        "engines": ["torch", "onnxruntime"],
        "threads": [1, 2],
        "repeats": 2,
        "warmup_iters": 1,
        "min_iters": 5,
        "min_seconds": 0.01,
        "max_seconds": 1.0,
        **benchmark,
    }
    raw["profile"] = {"batch_size": 4, "iters": 3, "top_k": 5}
    raw["llm"]["enabled"] = False  # the classifier's stages only; tests/model_builds/llm covers the LLM path
    with (root / "params.yaml").open("w") as handle:
        yaml.dump(raw, handle)


def build_workspace(root: Path) -> Path:
    """Fill `root` with the tiny pipeline outputs; returns root."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    texts = _texts(40)
    prepared = root / "data/prepared"
    prepared.mkdir(parents=True)
    for split, part in (("train", texts[:24]), ("val", texts[24:28]), ("test", texts[28:])):
        rows = [json.dumps({"text": text, "label": i % len(LABELS)}) for i, text in enumerate(part)]
        (prepared / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    (prepared / "labels.json").write_text(json.dumps(LABELS))
    _tokenizer(texts, root / "artifacts/tokenizer")

    config = BertConfig(
        vocab_size=200,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=len(LABELS),
    )
    model = BertForSequenceClassification(config).eval()
    variants = root / "artifacts/variants"
    hf, onnx_dir = variants / "fp32/hf", variants / "fp32/onnx"
    model.save_pretrained(str(hf))
    _export_onnx(model, onnx_dir, seq_len=16)
    for folder in (hf, onnx_dir):
        shutil.copytree(root / "artifacts/tokenizer", folder, dirs_exist_ok=True)
    int8_dir = variants / "int8-dynamic/onnx"
    int8_dir.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(onnx_dir / "model.onnx"), str(int8_dir / "model.onnx"), weight_type=QuantType.QInt8)
    shutil.copytree(root / "artifacts/tokenizer", int8_dir, dirs_exist_ok=True)
    parameters = sum(p.numel() for p in model.parameters())
    records = {
        "fp32": {
            "name": "fp32",
            "kind": "baseline",
            "precision": "fp32",
            "status": "built",
            "skip_reason": None,
            "artifacts": [
                _artifact(root, "torch", "hf-safetensors", "fp32", hf),
                _artifact(root, "onnxruntime", "onnx", "fp32", onnx_dir),
            ],
            "parameters": parameters,
            "sparsity": 0.0,
            "details": {},
        },
        "int8-dynamic": {
            "name": "int8-dynamic",
            "kind": "int8_onnx",
            "precision": "int8",
            "status": "built",
            "skip_reason": None,
            "artifacts": [_artifact(root, "onnxruntime", "onnx", "int8", int8_dir)],
            "parameters": parameters,
            "sparsity": 0.0,
            "details": {"calibration": "dynamic"},
        },
        "fp8": {
            "name": "fp8",
            "kind": "fp8",
            "precision": "fp8",
            "status": "skipped",
            "skip_reason": "fp8 needs a Hopper-class GPU; device is cpu",
            "artifacts": [],
            "parameters": None,
            "sparsity": None,
            "details": {},
        },
    }
    for name, record in records.items():
        (variants / name).mkdir(parents=True, exist_ok=True)
        (variants / name / "variant.json").write_text(json.dumps(record, indent=2))
    metrics = root / "metrics"
    metrics.mkdir()
    accuracy = {
        "baseline": "fp32",
        "max_accuracy_loss": 0.02,
        "n_test": 12,
        "baselines": {
            "majority": _interval(0.5),
            "tfidf_logreg": _interval(0.58),
            "majority_label": "computers",
        },
        "fingerprint": {"device": "cpu"},
        "variants": {
            "fp32": {
                "status": "built",
                "primary_engine": "onnxruntime",
                "engines": {
                    "onnxruntime": {"quality": _quality("onnxruntime", 0.5), "execution_device": "cpu"},
                    "torch": {"quality": _quality("torch", 0.5), "execution_device": "cpu"},
                },
            },
            "int8-dynamic": {
                "status": "built",
                "primary_engine": "onnxruntime",
                "engines": {
                    "onnxruntime": {
                        "quality": _quality("onnxruntime", 0.5),
                        "execution_device": "cpu",
                        "decision": {
                            "baseline": "fp32",
                            "engine": "onnxruntime",
                            "loss": {"estimate": 0.0, "low": -0.08, "high": 0.08, "confidence": 0.95},
                            "mcnemar_p": 1.0,
                            "baseline_only": 1,
                            "variant_only": 1,
                            "budget": 0.02,
                            "within_budget": False,
                        },
                    }
                },
            },
            "fp8": {"status": "skipped", "skip_reason": "fp8 needs a Hopper-class GPU; device is cpu"},
        },
    }
    (metrics / "accuracy.json").write_text(json.dumps(accuracy, indent=2))
    write_params(root)
    return root
