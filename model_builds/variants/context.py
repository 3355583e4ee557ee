"""What every variant builder shares: the teacher, the tokenized splits, the seed, the device, the paths."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from infopt.manifest import Artifact
from infopt.params import TrainParams
from model_builds.data import load_tokenizer, read_labels, read_split
from model_builds.modeling import Encoded, encode_examples, load_classifier
from model_builds.variants.onnx_export import export_onnx
from model_builds.variants.record import make_artifact


@dataclass
class BuildContext:
    teacher_dir: Path
    data_dir: Path
    out_root: Path  # artifacts/variants
    repo_root: Path  # artifact paths are recorded relative to it
    seed: int
    device: str
    max_seq_len: int
    train: TrainParams
    onnx: bool = True  # export ONNX artifacts (onnxruntime is among benchmark.engines)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def tokenizer(self):
        if "tokenizer" not in self._cache:
            self._cache["tokenizer"] = load_tokenizer(self.teacher_dir)
        return self._cache["tokenizer"]

    @property
    def labels(self) -> list[str]:
        return read_labels(self.data_dir)

    def split(self, name: str) -> Encoded:
        key = f"split:{name}"
        if key not in self._cache:
            self._cache[key] = encode_examples(self.tokenizer, read_split(self.data_dir, name), self.max_seq_len)
        return self._cache[key]

    def texts(self, name: str) -> list[str]:
        return [example.text for example in read_split(self.data_dir, name)]

    def teacher(self) -> torch.nn.Module:
        """A fresh FP32 copy of the teacher on CPU (builders may modify it)."""
        return load_classifier(self.teacher_dir, dtype=torch.float32).eval()

    def fp32_onnx_dir(self) -> Path:
        """The teacher exported to ONNX once per stage, in a scratch folder (int8/fp16 conversions start here)."""
        if "fp32_onnx" not in self._cache:
            scratch = Path(tempfile.mkdtemp(prefix="infopt-onnx-"))
            self._cache["scratch"] = scratch
            export_onnx(self.teacher_dir, scratch / "fp32", self.max_seq_len)
            self._cache["fp32_onnx"] = scratch / "fp32"
        return self._cache["fp32_onnx"]

    def variant_dir(self, name: str) -> Path:
        return self.out_root / name

    def artifact(self, path: Path, engine: str, fmt: str, precision: str) -> Artifact:
        return make_artifact(path, engine, fmt, precision, self.repo_root)

    def close(self) -> None:
        scratch = self._cache.pop("scratch", None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        self._cache.pop("fp32_onnx", None)
