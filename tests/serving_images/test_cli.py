"""`infopt images build` and `infopt infra run` as a user runs them (podman, 127.0.0.1)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import _register_subcommands, app
from infopt.artifact_store import pack
from tests.serving_images.conftest import SessionImages
from tests.serving_images.kit import tiny_manifest

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

pytestmark = [pytest.mark.podman, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def _commands() -> None:
    _register_subcommands()


def test_images_build_reuses_an_image_of_the_same_content_and_reports_it(
    session_images: SessionImages, tmp_path: Path
) -> None:
    ref = session_images.get("gateway-onnxruntime")  # built (or found) by the session, which owns cleanup
    report = tmp_path / "images.json"
    result = runner.invoke(
        app, ["images", "build", "--local-base", "--image", "gateway-onnxruntime", "--report", str(report)]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(report.read_text())
    (image,) = document["images"]
    assert image["ref"] == ref and image["built"] is False and image["build_s"] is None
    assert image["size_bytes"] > 100e6 and image["wheelhouse_bytes"] > 10e6
    assert document["base"]["ref"] == session_images.base and document["base"]["built"] is False
    assert document["engine"].startswith("podman ") and len(document["load_average_at_start"]) == 3
    assert document["fingerprint"]["git_sha"] and document["fingerprint"]["cpu_count"] >= 1


def test_images_build_refuses_an_unknown_image() -> None:
    result = runner.invoke(app, ["images", "build", "--image", "gateway-tensorrt"])
    assert result.exit_code == 2 and "unknown image(s) ['gateway-tensorrt']" in result.output


def test_infra_run_plays_the_dev_stack_and_removes_it(
    session_images: SessionImages, tiny_model: Path, tmp_path: Path
) -> None:
    session_images.get("gateway-onnxruntime")
    manifest = tmp_path / "manifest.json"
    tiny_manifest(tiny_model, manifest)
    bundles = tmp_path / "bundles"
    pack(tiny_model, bundles)
    result = runner.invoke(
        app,
        [
            "infra", "run", "--stack", "dev", "--params", str(ROOT / "params.yaml"), "--manifest", str(manifest),
            "--stacks-dir", str(ROOT / "stacks"), "--bundles", str(bundles), "--local-base", "--no-hold",
            "--work-dir", str(tmp_path / "play"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "textcls-premium" in result.output and "textcls-shared" in result.output
    assert "not run by podman: Services, HPAs" in result.output
    played = sorted(path.name for path in (tmp_path / "play").glob("*.yaml"))
    assert len(played) == 2 and all(name.startswith(("textcls-premium-", "textcls-shared-")) for name in played)
    pods = subprocess.run(["podman", "pod", "ps", "--format", "{{.Name}}"], capture_output=True, text=True, timeout=60)
    assert not [name for name in pods.stdout.split() if name.startswith(tuple(p.removesuffix(".yaml") for p in played))]


def test_infra_run_names_a_missing_bundle(tiny_model: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    tiny_manifest(tiny_model, manifest)
    (tmp_path / "empty").mkdir()
    result = runner.invoke(
        app,
        [
            "infra", "run", "--stack", "dev", "--params", str(ROOT / "params.yaml"), "--manifest", str(manifest),
            "--stacks-dir", str(ROOT / "stacks"), "--bundles", str(tmp_path / "empty"), "--no-pack-missing",
            "--no-hold",
        ],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "lacks the bundle(s) textcls-premium:" in " ".join(result.output.split())
