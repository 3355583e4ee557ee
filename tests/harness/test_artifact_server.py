"""The local artifact store the planned pods fetch from: bundles over HTTP on 127.0.0.1, nothing else."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from harness.artifact_server import ArtifactServer, ArtifactServerError
from infopt.artifact_store import fetch, pack
from infopt.hashing import tree_sha256


def test_serves_bundles_that_fetch_verifies_and_records_each_request(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.onnx").write_bytes(b"\x01" * 300)
    bundle = pack(model, tmp_path / "bundles")
    with ArtifactServer(tmp_path / "bundles") as server:
        assert server.base_url.startswith("http://127.0.0.1:") and server.port > 0
        dest = fetch(f"{server.base_url}/{bundle.name}", tree_sha256(model), tmp_path / "out" / "m")
        assert httpx.get(f"{server.base_url}/missing.tar.gz", timeout=10).status_code == 404
        listing = httpx.get(f"{server.base_url}/", timeout=10)
    assert tree_sha256(dest) == tree_sha256(model)
    assert listing.status_code == 404  # no directory listings
    assert server.fetched(bundle.name) == [200]
    assert server.fetched("missing.tar.gz") == [404]


def test_stopped_server_no_longer_answers(tmp_path: Path) -> None:
    with ArtifactServer(tmp_path) as server:
        url = server.base_url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/x", timeout=2)


def test_only_loopback_and_an_existing_folder(tmp_path: Path) -> None:
    with pytest.raises(ArtifactServerError, match="not a loopback address"):
        ArtifactServer(tmp_path, host="0.0.0.0")
    with pytest.raises(ArtifactServerError, match="not a folder"):
        ArtifactServer(tmp_path / "absent")
