"""variant.json: the variants stage writes infopt.manifest.VariantBuild here; evaluate, benchmark, profile
and manifest read it back through `load_variant_build`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError

from infopt.hashing import tree_sha256, tree_size
from infopt.manifest import Artifact, VariantBuild
from infopt.params import Params
from infopt.paths import VARIANTS_DIR


class VariantBuildError(ValueError):
    """variant.json is missing or invalid; the message names the variant and the file."""


def make_artifact(path: Path, engine: str, fmt: str, precision: str, repo_root: Path) -> Artifact:
    """An Artifact for a folder (hash and size of the whole tree), its path relative to repo_root."""
    return Artifact.model_validate(
        {
            "engine": engine,
            "format": fmt,
            "precision": precision,
            "path": Path(os.path.relpath(Path(path).resolve(), Path(repo_root).resolve())).as_posix(),
            "sha256": tree_sha256(path),
            "size_bytes": tree_size(path),
        }
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
        raise VariantBuildError(f"{path}: not found; run the variants stage (dvc repro variants)")
    try:
        return VariantBuild.model_validate(json.loads(path.read_text()))
    except (ValidationError, json.JSONDecodeError) as error:
        raise VariantBuildError(f"{path}: not a valid variant build record: {error}") from None


def enabled_builds(params: Params, root: Path = Path(".")) -> list[VariantBuild]:
    """Builds of every enabled variant, in params order."""
    return [load_variant_build(root / VARIANTS_DIR / variant.name) for variant in params.variants if variant.enabled]


def narrow_builds(builds: list[VariantBuild], names: list[str]) -> list[VariantBuild]:
    """The builds a stage's `variants` filter keeps (empty filter: all of them; the params schema has checked
    that every name is an enabled variant)."""
    return [build for build in builds if not names or build.name in names]
