"""A manifest whose int8-dynamic ONNX artifact is a tiny real model: what the dev plan's pods fetch."""

from __future__ import annotations

from pathlib import Path

from infopt.hashing import tree_sha256
from infopt.manifest import Manifest, load_manifest
from tests.serving.gateway_kit import LABELS

ROOT = Path(__file__).resolve().parents[2]
VARIANT = "int8-dynamic"  # what both dev deployments serve (params.yaml)


def tiny_manifest(model_dir: Path, out: Path) -> Manifest:
    """tests/fixtures/manifest.json with the tiny model as int8-dynamic's ONNX artifact (hash, size, labels)."""
    manifest = load_manifest(ROOT / "tests/fixtures/manifest.json")
    size = sum(item.stat().st_size for item in model_dir.rglob("*") if item.is_file())
    variants = []
    for entry in manifest.variants:
        if entry.name == VARIANT:
            artifacts = [
                a.model_copy(update={"sha256": tree_sha256(model_dir), "size_bytes": size})
                if a.engine == "onnxruntime"
                else a
                for a in entry.artifacts
            ]
            entry = entry.model_copy(update={"artifacts": artifacts})
        variants.append(entry)
    manifest = Manifest.model_validate(
        manifest.model_copy(update={"labels": list(LABELS), "variants": variants}).model_dump(mode="json")
    )
    out.write_text(manifest.model_dump_json(indent=1))
    return manifest
