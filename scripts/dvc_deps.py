"""Keeps dvc.yaml's `deps` equal to what each stage's command really imports.

A stage whose deps miss a module it imports lets DVC serve a stale result after that module changes, so
the closure is derived statically (every `import`/`from ... import` of a project package, also inside
functions), starting from the module each `cmd` runs with `python -m`. `python scripts/dvc_deps.py --write`
adds what is missing, in place, comments kept; tests/test_dvc_deps.py fails while anything is missing.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

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


def missing_deps(stage: str, spec: dict) -> list[str]:
    """Project files the stage's command imports that its deps do not cover."""
    match = re.fullmatch(r"python -m ([\w.]+)", spec["cmd"])
    if match is None:
        raise ValueError(f"dvc.yaml stage {stage}: cmd {spec['cmd']!r} is not `python -m <module>`")
    deps = [str(dep) for dep in spec.get("deps", [])]
    return sorted(p.relative_to(ROOT).as_posix() for p in closure(match.group(1)) if not covered(p, deps))


def write_missing() -> dict[str, list[str]]:
    """Append each stage's missing deps to dvc.yaml (round-trip: comments and order kept)."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    path = ROOT / "dvc.yaml"
    document = yaml.load(path.read_text())
    added = {}
    for stage, spec in document["stages"].items():
        missing = missing_deps(stage, spec)
        if missing:
            spec.setdefault("deps", []).extend(missing)
            added[stage] = missing
    with path.open("w") as handle:
        yaml.dump(document, handle)
    return added


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        for stage, files in write_missing().items():
            print(f"{stage}: + {', '.join(files)}")
    else:
        problems = {stage: missing_deps(stage, spec) for stage, spec in stages().items()}
        for stage, files in problems.items():
            if files:
                print(f"{stage}: missing {', '.join(files)}")
        sys.exit(1 if any(problems.values()) else 0)
