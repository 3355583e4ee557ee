"""dvc.yaml lists, for every stage, every module of this repository that the stage's command imports.

`python scripts/dvc_deps.py --write` repairs what this test finds.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("dvc_deps", ROOT / "scripts" / "dvc_deps.py")
assert _spec is not None and _spec.loader is not None
dvc_deps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dvc_deps)


@pytest.mark.parametrize("stage", sorted(dvc_deps.stages()))
def test_every_imported_module_is_a_dependency_of_its_stage(stage: str) -> None:
    missing = dvc_deps.missing_deps(stage, dvc_deps.stages()[stage])
    assert not missing, (
        f"dvc.yaml stage {stage!r} imports {missing} but does not list them in deps (fix: python scripts/dvc_deps.py --write)"
    )


def test_the_closure_sees_imports_inside_functions() -> None:
    # model_builds/manifest.py imports infopt.tracking inside log_runs(); the closure must include it.
    assert ROOT / "infopt" / "tracking.py" in dvc_deps.closure("model_builds.manifest")
