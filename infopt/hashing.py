"""Content hashes of artifacts: the manifest records them, the deploy-time init step verifies them."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's sorted `relative-path file-sha256` lines (stable across copies)."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    lines = [
        f"{item.relative_to(path).as_posix()} {file_sha256(item)}\n"
        for item in sorted(path.rglob("*"))
        if item.is_file()
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def tree_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
