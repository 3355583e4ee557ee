"""Content-addressed artifact bundles: what a serving pod's init step fetches and verifies.

`pack` turns a variant's artifact folder into `<sha256>.tar.gz`, named by the same `tree_sha256` the
manifest records; `fetch` downloads (http/https/file URL or a local path), unpacks into a temporary folder,
recomputes the hash and only then moves it into place, so a pod never starts on a corrupt or wrong model.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import httpx

from infopt.hashing import tree_sha256


class ArtifactError(RuntimeError):
    """An artifact bundle is missing, unsafe to unpack, or does not match its expected content hash."""


def pack(folder: Path, out_dir: Path) -> Path:
    """Write `<out_dir>/<tree_sha256(folder)>.tar.gz` holding the folder's files at the archive root."""
    folder, out_dir = Path(folder), Path(out_dir)
    if not folder.exists():
        raise ArtifactError(f"{folder}: artifact folder not found")
    digest = tree_sha256(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{digest}.tar.gz"
    with tarfile.open(target, "w:gz") as archive:
        if folder.is_file():
            archive.add(folder, arcname=folder.name)
        else:
            for item in sorted(folder.rglob("*")):
                if item.is_file():
                    archive.add(item, arcname=item.relative_to(folder).as_posix())
    return target


def _download(url: str, dest: Path, timeout_s: float) -> None:
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=True) as response:
            if response.status_code != 200:
                raise ArtifactError(f"{url}: HTTP {response.status_code}")
            with dest.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
        return
    source = Path(parsed.path if parsed.scheme == "file" else url)
    if not source.is_file():
        raise ArtifactError(f"{url}: no such file")
    shutil.copyfile(source, dest)


def _safe_extract(archive_path: Path, dest: Path) -> None:
    root = dest.resolve()
    with tarfile.open(archive_path, "r:gz") as archive:
        for member in archive.getmembers():
            if not (member.isfile() or member.isdir()):
                raise ArtifactError(f"{archive_path.name}: refusing non-regular member {member.name!r}")
            target = (root / member.name).resolve()
            if target != root and root not in target.parents:
                raise ArtifactError(f"{archive_path.name}: refusing member {member.name!r} outside the folder")
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 (PEP 706)
            archive.extractall(dest, filter="data")
        else:  # e.g. Debian 12's Python 3.11.2: every member was checked above (regular, inside dest)
            archive.extractall(dest)


def fetch(url: str, expected_sha256: str, dest: Path, *, timeout_s: float = 300.0) -> Path:
    """Download and unpack a bundle into `dest`, verifying its content hash; idempotent when already there."""
    dest = Path(dest)
    if dest.exists() and tree_sha256(dest) == expected_sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as scratch:
        scratch_path = Path(scratch)
        bundle = scratch_path / "bundle.tar.gz"
        _download(url, bundle, timeout_s)
        unpacked = scratch_path / "unpacked"
        _safe_extract(bundle, unpacked)
        actual = tree_sha256(unpacked)
        if actual != expected_sha256:
            raise ArtifactError(
                f"{url}: content sha256 {actual} does not match the manifest's {expected_sha256}; refusing it"
            )
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(unpacked, dest)
    return dest


def verify(path: Path, expected_sha256: str) -> None:
    actual = tree_sha256(Path(path))
    if actual != expected_sha256:
        raise ArtifactError(f"{path}: content sha256 {actual} != expected {expected_sha256}")
