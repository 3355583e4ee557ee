"""dvc.yaml lists, for every stage, every module of this repository that the stage's command imports.

A stage whose `deps` miss a module it imports would let DVC serve a stale result after that module changes.
The closure is derived statically (every `import`/`from ... import` of a project package, also inside
functions), starting from the module each `cmd` runs with `python -m`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"infopt", "model_builds", "serving", "infra", "policies", "agent", "harness", "benchmarks", "cli"}


def module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Project modules imported anywhere in `path` (a `from a.b import c` counts a.b and, if a module, a.b.c)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES and module_file(name) is not None}


def closure(module: str) -> set[Path]:
    """Every project file the module imports, transitively (package __init__ files included)."""
    seen: set[Path] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            path = module_file(".".join(parts[:depth]))
            if path is None or path in seen:
                continue
            seen.add(path)
            pending.extend(imported_modules(path))
    main = module_file(f"{module}.__main__")
    if main is not None and main not in seen:
        seen.add(main)
        for name in imported_modules(main):
            seen |= closure(name)
    return seen


def stages() -> dict[str, dict]:
    return YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("stage", sorted(stages()))
def test_every_imported_module_is_a_dependency_of_its_stage(stage: str) -> None:
    spec = stages()[stage]
    match = re.fullmatch(r"python -m ([\w.]+)", spec["cmd"])
    assert match, f"stage {stage}: cmd {spec['cmd']!r} is not `python -m <module>`"
    deps = [str(dep) for dep in spec.get("deps", [])]
    missing = sorted(p.relative_to(ROOT).as_posix() for p in closure(match.group(1)) if not covered(p, deps))
    assert not missing, f"dvc.yaml stage {stage!r} imports {missing} but does not list them in deps"


def test_the_closure_sees_imports_inside_functions() -> None:
    # model_builds/manifest.py imports infopt.tracking inside log_runs(); the closure must include it.
    assert ROOT / "infopt" / "tracking.py" in closure("model_builds.manifest")
