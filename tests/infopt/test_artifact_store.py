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


@pytest.fixture
def s3_server(monkeypatch) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (a real HTTP server speaking the S3 API), reached through boto3."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://{host}:{port}")
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_fetch_from_s3_verifies_the_bundle(model_folder: Path, tmp_path: Path, s3_server: str) -> None:
    import boto3

    bundle = pack(model_folder, tmp_path / "out")
    client = boto3.client("s3")
    client.create_bucket(Bucket="infopt-artifacts", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    client.upload_file(str(bundle), "infopt-artifacts", f"artifacts/{bundle.name}")
    digest = tree_sha256(model_folder)
    dest = fetch(f"s3://infopt-artifacts/artifacts/{bundle.name}", digest, tmp_path / "models" / "m")
    assert tree_sha256(dest) == digest
    with pytest.raises(ArtifactError, match=r"s3://infopt-artifacts/artifacts/missing.tar.gz: S3 error 404"):
        fetch("s3://infopt-artifacts/artifacts/missing.tar.gz", digest, tmp_path / "models" / "x")
    client.put_object(Bucket="infopt-artifacts", Key="artifacts/tampered.tar.gz", Body=bundle.read_bytes())
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        fetch("s3://infopt-artifacts/artifacts/tampered.tar.gz", "0" * 64, tmp_path / "models" / "t")
    assert not (tmp_path / "models" / "t").exists()


@pytest.fixture
def gcs_server(monkeypatch) -> Iterator[str]:
    """gcp-storage-emulator on 127.0.0.1 (the GCS JSON API), reached through google-cloud-storage."""
    from gcp_storage_emulator.server import create_server

    server = create_server("127.0.0.1", 0, in_memory=True, default_bucket="infopt-artifacts")
    server.start()
    port = server._api._httpd.server_address[1]  # the emulator binds port 0 and keeps the socket here
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.mark.filterwarnings("ignore:Please install grpcio-status:ImportWarning")  # api_core's optional extra
def test_fetch_from_gcs_verifies_the_bundle(model_folder: Path, tmp_path: Path, gcs_server: str) -> None:
    from google.cloud import storage

    bundle = pack(model_folder, tmp_path / "out")
    bucket = storage.Client().bucket("infopt-artifacts")
    bucket.blob(f"artifacts/{bundle.name}").upload_from_filename(str(bundle))
    digest = tree_sha256(model_folder)
    dest = fetch(f"gs://infopt-artifacts/artifacts/{bundle.name}", digest, tmp_path / "models" / "m")
    assert tree_sha256(dest) == digest
    with pytest.raises(ArtifactError, match=r"gs://infopt-artifacts/artifacts/none.tar.gz: GCS error: 404"):
        fetch("gs://infopt-artifacts/artifacts/none.tar.gz", digest, tmp_path / "models" / "x")


def test_redirect_to_another_host_fails_naming_it(tmp_path: Path) -> None:
    """A store that redirects to S3/GCS would leave the NetworkPolicy's allowed destinations: say so."""

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://localhost:9/x")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/away"
        with pytest.raises(ArtifactError, match=r"redirected to http://localhost:9/x, another host"):
            fetch(url, "a" * 64, tmp_path / "d")
    finally:
        server.shutdown()
        server.server_close()


def test_unsupported_scheme_is_named(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"ftp://x/y.tar.gz: unsupported scheme 'ftp'"):
        fetch("ftp://x/y.tar.gz", "a" * 64, tmp_path / "d")
