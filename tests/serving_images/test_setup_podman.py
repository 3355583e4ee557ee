"""scripts/setup_podman.sh: idempotent, and podman runs with the settings these machines need."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.serving_images.conftest import NO_PODMAN

ROOT = Path(__file__).resolve().parents[2]
CONF = Path("/etc/containers/containers.conf.d/50-infopt.conf")

pytestmark = [
    pytest.mark.podman,
    pytest.mark.skipif(shutil.which("podman") is None, reason=NO_PODMAN),
    pytest.mark.skipif(os.geteuid() != 0, reason="setup_podman.sh writes /etc/containers: run as root"),
]


def test_second_run_changes_nothing_and_podman_uses_runc_cgroupfs_and_the_ulimits() -> None:
    first = subprocess.run(["bash", str(ROOT / "scripts/setup_podman.sh")], capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    before = CONF.stat().st_mtime_ns
    second = subprocess.run(
        ["bash", str(ROOT / "scripts/setup_podman.sh")], capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0 and "wrote" not in second.stdout and "installing" not in second.stdout
    assert CONF.stat().st_mtime_ns == before
    info = subprocess.run(
        ["podman", "info", "--format", "{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert info.stdout.split() == ["runc", "cgroupfs"]
    text = CONF.read_text()
    assert 'default_ulimits = ["nofile=20000:20000", "nproc=1024:1024"]' in text
