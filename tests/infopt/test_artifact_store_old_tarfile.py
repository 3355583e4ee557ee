"""`fetch` on a Python without tarfile's extraction filters (Debian 12's 3.11.2, the local image base).

PEP 706's `filter="data"` arrived in 3.11.4; before it, `_safe_extract`'s own member checks are the guard.
The tests remove `tarfile.data_filter` for their duration, as that interpreter lacks it.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from infopt.artifact_store import ArtifactError, fetch, pack
from infopt.hashing import tree_sha256


@pytest.fixture
def without_extraction_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(tarfile, "data_filter")


def _bundle_with(path: Path, name: str, data: bytes) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        member = tarfile.TarInfo(name)
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    return path


@pytest.mark.usefixtures("without_extraction_filters")
def test_fetch_unpacks_and_verifies_without_extraction_filters(tmp_path: Path) -> None:
    folder = tmp_path / "onnx"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"\x08\x01" * 100)
    (folder / "sub" / "tokenizer.json").write_text("{}")
    bundle = pack(folder, tmp_path / "store")
    dest = fetch(str(bundle), tree_sha256(folder), tmp_path / "models" / "v")
    assert (dest / "sub" / "tokenizer.json").read_text() == "{}"
    assert tree_sha256(dest) == tree_sha256(folder)


@pytest.mark.usefixtures("without_extraction_filters")
@pytest.mark.parametrize("name", ["../escaped.txt", "/abs/escaped.txt", "sub/../../escaped.txt"])
def test_members_outside_the_folder_are_refused_without_extraction_filters(tmp_path: Path, name: str) -> None:
    bundle = _bundle_with(tmp_path / "evil.tar.gz", name, b"x")
    with pytest.raises(ArtifactError, match="outside the folder"):
        fetch(str(bundle), "0" * 64, tmp_path / "models" / "v")
    assert not (tmp_path / "models" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
