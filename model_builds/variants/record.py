"""variant.json: what the variants stage built for one variant, read by evaluate, benchmark and manifest."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infopt.hashing import tree_sha256, tree_size
from infopt.manifest import Artifact

Precision = Literal["fp32", "fp16", "bf16", "int8", "fp8"]
VARIANTS_DIR = Path("artifacts/variants")


class VariantBuildError(ValueError):
    """variant.json is missing or invalid; the message names the file."""


class VariantBuild(BaseModel):
    """The record in artifacts/variants/<name>/variant.json."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: str
    precision: Precision
    status: Literal["built", "skipped"]
    skip_reason: str | None = None
    artifacts: list[Artifact] = Field(default_factory=list)
    parameters: int | None = None  # total parameter count of the built model
    sparsity: float | None = None  # fraction of zero weights in nn.Linear layers
    details: dict[str, float | int | str | bool] = Field(default_factory=dict)

    def artifact(self, engine: str) -> Artifact:
        for artifact in self.artifacts:
            if artifact.engine == engine:
                return artifact
        raise VariantBuildError(f"variant {self.name!r} has no {engine} artifact (has {[a.engine for a in self.artifacts]})")


def make_artifact(path: Path, engine: str, fmt: str, precision: str, repo_root: Path) -> Artifact:
    """An Artifact for a folder (hash and size of the whole tree), its path relative to repo_root."""
    return Artifact(
        engine=engine,
        format=fmt,
        precision=precision,
        path=Path(os.path.relpath(Path(path).resolve(), Path(repo_root).resolve())).as_posix(),
        sha256=tree_sha256(path),
        size_bytes=tree_size(path),
    )


def write_variant_build(build: VariantBuild, variant_dir: Path) -> Path:
    variant_dir.mkdir(parents=True, exist_ok=True)
    path = variant_dir / "variant.json"
    path.write_text(json.dumps(build.model_dump(mode="json"), indent=2) + "\n")
    return path


def load_variant_build(path: str | Path) -> VariantBuild:
    """Read a variant.json (or the variant folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "variant.json"
    if not path.is_file():
        raise VariantBuildError(f"{path}: not found; run `python -m model_builds.variants`")
    try:
        return VariantBuild.model_validate(json.loads(path.read_text()))
    except (ValidationError, json.JSONDecodeError) as error:
        raise VariantBuildError(f"{path}: {error}") from None
