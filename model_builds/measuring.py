"""Shared plumbing of the measuring stages (evaluate, benchmark, profile, manifest): engines, inputs, JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from infopt.engines.factory import load_engine
from infopt.manifest import Artifact
from infopt.paths import PREPARED_DIR, TOKENIZER_DIR

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class BuildError(ValueError):
    """A variant build the stage needs is missing or malformed; the message names variant and path."""


def open_engine(artifact: Artifact, device: str, threads: int | None = None, root: Path = Path(".")) -> Any:
    """The engine for an artifact, through the same loader the gateway serves with."""
    return load_engine(
        artifact.engine, root / artifact.path, device=device, precision=artifact.precision, threads=threads
    )


def providers_of(engine: Any) -> list[str] | None:
    """ONNX Runtime's providers of a loaded session, in priority order; None for other engines."""
    session = getattr(engine, "session", None)
    return list(session.get_providers()) if session is not None else None


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


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_json(path: Path, stage: str) -> Any:
    if not path.is_file():
        raise BuildError(f"{path} not found; run the {stage} stage")
    return json.loads(path.read_text())
