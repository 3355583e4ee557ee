"""The serving images, built once per test session with podman on the local Debian base.

An image this session builds is removed when the session ends; one that existed before (from `infopt
images build --local-base` with the same content) is reused and kept. Tests that need podman skip, with
the reason, on a machine without it; CI installs it (scripts/setup_podman.sh).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from harness.images import IMAGES, BuildPlan, ContainerEngine, build_base, build_image

NO_PODMAN = "podman is not installed: run `bash scripts/setup_podman.sh` as root (CI does)"


class SessionImages:
    """Lazily built images (base first); remembers which ones this session created."""

    def __init__(self) -> None:
        self.engine = ContainerEngine("podman")
        self.base: str | None = None
        self.refs: dict[str, str] = {}
        self.created: list[str] = []

    def get(self, name: str) -> str:
        if name not in self.refs:
            if self.base is None:
                self.base, built = build_base(self.engine)
                if built:
                    self.created.append(self.base)
            image = build_image(BuildPlan(engine=self.engine, base_image=self.base), IMAGES[name])
            if image.built:
                self.created.append(image.ref)
            self.refs[name] = image.ref
        return self.refs[name]

    def cleanup(self) -> None:
        """Images first, then the base they were built on (podman refuses to remove a base in use)."""
        for ref in reversed(self.created):
            subprocess.run(["podman", "image", "rm", ref], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def session_images() -> Iterator[SessionImages]:
    if shutil.which("podman") is None:
        pytest.skip(NO_PODMAN)
    images = SessionImages()
    yield images
    images.cleanup()
