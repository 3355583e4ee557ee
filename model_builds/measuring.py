"""Shared plumbing of the measuring stages (benchmark, profile, manifest): paths, builds, inputs, JSON.

Variant builds are read through `model_builds.variants.load_variant_build` (the variants stage's own
reader of artifacts/variants/<name>/variant.json) and adapted to the small view the measuring stages use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infopt.manifest import Artifact
from infopt.params import Params

VARIANTS_DIR = Path("artifacts/variants")
PREPARED_DIR = Path("data/prepared")
TOKENIZER_DIR = Path("artifacts/tokenizer")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class BuildError(ValueError):
    """A variant build the stage needs is missing or malformed; the message names variant and path."""


@dataclass(frozen=True)
class VariantBuild:
    """What the variants stage recorded for one variant (variant.json)."""

    name: str
    kind: str
    precision: str
    status: str
    skip_reason: str | None
    artifacts: list[Artifact]
    parameters: int | None
    sparsity: float | None
    details: dict[str, Any]

    def artifact(self, engine: str) -> Artifact | None:
        return next((artifact for artifact in self.artifacts if artifact.engine == engine), None)


def resolve_device(setting: str) -> str:
    """params.device: auto -> cuda when torch sees a GPU, else cpu."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def onnxruntime_device(device: str) -> tuple[str, str | None]:
    """Where ONNX Runtime runs for a stage on `device`, and why that differs from `device` (None if not).

    On cuda without onnxruntime-gpu (no CUDAExecutionProvider) ONNX Runtime can only run on the CPU:
    accuracy is still measured there (and recorded as such); latency is not, since CPU numbers would be
    filed under the GPU run.
    """
    if device != "cuda":
        return device, None
    import onnxruntime as ort

    available = list(ort.get_available_providers())
    if "CUDAExecutionProvider" in available:
        return "cuda", None
    return "cpu", (
        f"device is cuda but onnxruntime {ort.__version__} has only {available} "
        "(no CUDAExecutionProvider; install onnxruntime-gpu)"
    )


def open_engine(artifact: Artifact, device: str, threads: int | None = None, root: Path = Path(".")) -> Any:
    """The serving engine for an artifact, loaded by the gateway's own factory; fp8 hf/ folders get the fp8
    builder's Fp8Engine (same contract, CUDA only), which the gateway does not serve."""
    path = root / artifact.path
    if artifact.engine == "torch" and artifact.precision == "fp8":
        from model_builds.variants.fp8 import Fp8Engine

        return Fp8Engine(path, device=device, threads=threads)
    from serving.engines.factory import load_engine

    return load_engine(artifact.engine, path, device=device, precision=artifact.precision, threads=threads)


def providers_of(engine: Any) -> list[str] | None:
    """ONNX Runtime's providers of a loaded session, in priority order; None for other engines."""
    session = getattr(engine, "session", None)
    return list(session.get_providers()) if session is not None else None


def _from_record(record: Any, path: Path) -> VariantBuild:
    data = record.model_dump() if hasattr(record, "model_dump") else dict(record)
    try:
        return VariantBuild(
            name=data["name"],
            kind=data["kind"],
            precision=data["precision"],
            status=data["status"],
            skip_reason=data.get("skip_reason"),
            artifacts=[Artifact.model_validate(item) for item in data.get("artifacts", [])],
            parameters=data.get("parameters"),
            sparsity=data.get("sparsity"),
            details=dict(data.get("details") or {}),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise BuildError(f"{path}: not a valid variant build record: {error}") from None


def read_variant_build(name: str, root: Path = Path(".")) -> VariantBuild:
    """variant.json of `name`, read by the variants stage's own loader."""
    path = root / VARIANTS_DIR / name / "variant.json"
    if not path.is_file():
        raise BuildError(f"variant {name!r}: {path} not found; run the variants stage (dvc repro variants)")
    from model_builds.variants import VariantBuildError, load_variant_build

    try:
        record = load_variant_build(path)
    except VariantBuildError as error:
        raise BuildError(f"variant {name!r}: {error}") from None
    return _from_record(record, path)


def enabled_builds(params: Params, root: Path = Path(".")) -> list[VariantBuild]:
    """Builds of every enabled variant, in params order."""
    return [read_variant_build(variant.name, root) for variant in params.variants if variant.enabled]


def load_texts(split: str = "test", root: Path = Path(".")) -> list[str]:
    path = root / PREPARED_DIR / f"{split}.jsonl"
    if not path.is_file():
        raise BuildError(f"{path} not found; run the prepare stage")
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    if not texts:
        raise BuildError(f"{path} holds no examples")
    return texts


def tokenizer_dir(artifact: Artifact, root: Path = Path(".")) -> Path:
    """The tokenizer saved with the artifact, else the pipeline's shared one (artifacts/tokenizer)."""
    folder = root / artifact.path
    if folder.is_dir() and any((folder / name).is_file() for name in TOKENIZER_FILES):
        return folder
    shared = root / TOKENIZER_DIR
    if shared.is_dir():
        return shared
    raise BuildError(f"no tokenizer in {folder} or {shared}")


def encode(texts: list[str], tokenizer_path: Path, max_seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Real texts padded/truncated to a fixed (N, max_seq_len) shape, int64 as the engines take them."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path))
    encoded = tokenizer(
        texts, padding="max_length", truncation=True, max_length=max_seq_len, return_tensors="np"
    )
    return encoded["input_ids"].astype(np.int64), encoded["attention_mask"].astype(np.int64)


def cycle_batch(ids: np.ndarray, mask: np.ndarray, batch_size: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The index-th batch of `batch_size` rows, cycling through the encoded set."""
    rows = (np.arange(batch_size) + index * batch_size) % len(ids)
    return ids[rows], mask[rows]


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_json(path: Path, stage: str) -> Any:
    if not path.is_file():
        raise BuildError(f"{path} not found; run the {stage} stage")
    return json.loads(path.read_text())
