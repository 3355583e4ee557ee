from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infopt.artifact_store import ArtifactError, fetch, pack, verify
from infopt.hashing import tree_sha256


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "onnx"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"\x08\x01" * 1000)
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    (folder / "sub" / "extra.txt").write_text("x")
    return folder


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a folder, stopped after the test."""
    root = tmp_path / "store"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_pack_names_bundle_by_the_manifest_content_hash(model_folder: Path, tmp_path: Path) -> None:
    bundle = pack(model_folder, tmp_path / "out")
    assert bundle.name == f"{tree_sha256(model_folder)}.tar.gz"


def test_fetch_over_http_unpacks_an_identical_tree(model_folder: Path, tmp_path: Path, file_server) -> None:
    base_url, root = file_server
    bundle = pack(model_folder, root)
    digest = tree_sha256(model_folder)
    dest = fetch(f"{base_url}/{bundle.name}", digest, tmp_path / "models" / "int8")
    assert tree_sha256(dest) == digest
    assert (dest / "sub" / "extra.txt").read_text() == "x"


def test_fetch_refuses_a_bundle_whose_content_does_not_match(model_folder: Path, tmp_path: Path) -> None:
    bundle = pack(model_folder, tmp_path / "out")
    wrong = "0" * 64
    dest = tmp_path / "models" / "bad"
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        fetch(str(bundle), wrong, dest)
    assert not dest.exists(), "a rejected bundle must not be left where the server would load it"


def test_fetch_reports_a_missing_bundle_by_url(tmp_path: Path, file_server) -> None:
    base_url, _ = file_server
    with pytest.raises(ArtifactError, match="HTTP 404"):
        fetch(f"{base_url}/{'a' * 64}.tar.gz", "a" * 64, tmp_path / "dest")


def test_cli_fetch_exits_nonzero_on_hash_mismatch(model_folder: Path, tmp_path: Path) -> None:
    from cli.main import app

    bundle = pack(model_folder, tmp_path / "out")
    result = CliRunner().invoke(
        app, ["artifact", "fetch", "--url", str(bundle), "--sha256", "f" * 64, "--dest", str(tmp_path / "d")]
    )
    assert result.exit_code == 1
    assert "does not match" in result.output
    verify(model_folder, tree_sha256(model_folder))
