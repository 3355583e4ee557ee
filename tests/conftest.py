"""Fixtures shared across test folders (pytest finds them here by name)."""

from pathlib import Path

import pytest

from tests.pipeline_workspace import build_pipeline_workspace
from tests.serving.gateway_kit import tiny_model

__all__ = ["pipeline", "tiny_model"]


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], float]:
    """The shrunk pipeline after a real `dvc repro` (tests/pipeline_workspace.py); read it, do not change it."""
    return build_pipeline_workspace(tmp_path_factory)
