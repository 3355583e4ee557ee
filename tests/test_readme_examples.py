"""Every command block of the README runs: here, or in the test its marker names.

Each fenced ```bash block of README.md is preceded by a marker comment:

- `<!-- example: NAME -->`: a runner below executes the block, command by command, in a copy of the shrunk
  pipeline workspace (tests/pipeline_workspace.py) where `dvc repro` already ran;
- `<!-- tested-by: path::test[, path::test] -->`: for heavy or machine-bound commands (image builds, the
  ladder, the framework comparison); each named test must exist and the named files together must run every
  command of the block (its program and subcommand appear in their source).

A block without a marker, or a marker naming nothing, fails here: the README cannot drift from what runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from ruamel.yaml import YAML

from harness.child_server import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"(?:<!--\s*(example|tested-by):\s*([^>]+?)\s*-->\s*\n)?```bash\n(.*?)```", re.S)
README_PORT = "8000"  # the port the README's serving example uses; replaced by a free one here


def blocks() -> list[tuple[str | None, str | None, str]]:
    """(marker kind, marker value, code) of every bash block in the README."""
    return [(m.group(1), m.group(2), m.group(3)) for m in BLOCK.finditer(README.read_text())]


def commands(code: str) -> list[str]:
    """The block's commands: comments stripped, backslash continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", code)
    lines = [re.split(r"\s+#\s", line, maxsplit=1)[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def command_keys(command: str) -> list[str]:
    """What a test must mention to run this command: a script's file name, or infopt's subcommand words."""
    words = [w for w in shlex.split(command.rstrip("&")) if w != "sudo" and "=" not in w.split("/")[0]]
    if words[0] == "bash":
        return [Path(words[1]).name]
    if words[0] == "infopt":
        return [w for w in words[1:3] if not w.startswith("-")]
    return [words[0]]


def test_every_block_is_marked_and_every_marker_names_something_real() -> None:
    found = blocks()
    assert len(found) >= 5, "README.md lost its command blocks"
    for kind, value, code in found:
        first = (commands(code) or [code[:40]])[0]
        assert kind is not None, f"README block without an example/tested-by marker: {first!r}"
        if kind == "example":
            assert value in RUNNERS, f"README example {value!r} has no runner in tests/test_readme_examples.py"
            continue
        sources = []
        for target in str(value).split(","):
            path, _, name = target.strip().partition("::")
            source = (ROOT / path).read_text() if (ROOT / path).is_file() else ""
            assert re.search(rf"def {re.escape(name)}\(", source), f"README block {first!r}: {target} does not exist"
            sources.append(source)
        for command in commands(code):
            for key in command_keys(command):
                assert any(key in source for source in sources), f"{value} does not run {key!r} ({command!r})"


def test_ci_runs_the_quickstart_commands_in_order() -> None:
    """The quickstart block is what .ci/run executes on its clean clone, in the same order."""
    quickstart = next(code for kind, value, code in blocks() if kind == "example" and value == "quickstart")
    ci = (ROOT / ".ci" / "run").read_text()
    positions = [ci.find(command) for command in commands(quickstart)]
    assert len(positions) == 2 and all(p >= 0 for p in positions), (commands(quickstart), ci)
    assert positions == sorted(positions), "the README's commands run in another order in .ci/run"


# ----------------------------------------------------------------------------- running the examples
def _shell(command: str, cwd: Path, env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command!r} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def run_block(code: str, cwd: Path, env: dict[str, str]) -> dict[str, str]:
    return {command: _shell(command, cwd, env, 600) for command in commands(code) if command != ". scripts/env.sh"}


def run_serving_block(code: str, cwd: Path, env: dict[str, str]) -> dict[str, str]:
    """The block's `infopt serve ... &` runs in the background (on a free port) until its other commands ran."""
    port = str(free_port())
    lines = [c.replace(README_PORT, port) for c in commands(code) if c != ". scripts/env.sh"]
    server_lines = [c for c in lines if c.startswith("infopt serve")]
    assert len(server_lines) == 1 and server_lines[0].endswith("&"), "a serving example starts one server with &"
    (cwd / "runs").mkdir(exist_ok=True)
    log = (cwd / "runs" / "serve.log").open("wb")
    server = subprocess.Popen(
        ["bash", "-c", f"exec {server_lines[0].rstrip('&').strip()}"],
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (cwd / "runs" / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the README's server did not become ready within 180 s"
            time.sleep(0.5)
        return {c: _shell(c, cwd, env, 300) for c in lines if c not in server_lines}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()


def check_pipeline(outputs: dict[str, str], root: Path) -> None:
    assert "variant" in outputs["infopt pipeline summary"]
    shown = outputs["dvc metrics show"]
    assert "metrics/summary/fp32.json" in shown and max(len(line) for line in shown.splitlines()) <= 120, shown
    assert YAML(typ="safe").load((root / "params.yaml").read_text())["benchmark"]["batch_sizes"] == [1, 8]


def check_serve(outputs: dict[str, str], root: Path) -> None:
    classify = next(out for command, out in outputs.items() if "/v1/classify" in command)
    assert '"results"' in classify, classify
    report = json.loads((root / "runs" / "load.json").read_text())
    assert report["totals"]["ok"] > 0 and report["totals"]["errors"] == 0, report["totals"]
    cost = next(out for command, out in outputs.items() if command.startswith("infopt cost"))
    assert "initech" in cost


def check_infra(outputs: dict[str, str], root: Path) -> None:
    assert (root / "runs" / "plan" / "prod.summary.json").is_file()


def check_agent(outputs: dict[str, str], root: Path) -> None:
    said = next(out for command, out in outputs.items() if command.startswith("infopt agent propose"))
    assert "batching" in said and "scaling" in said, said  # every node reported, proposal or refusal
    assert list((root / "plan" / "agent").glob("*.json")), "the proposal JSON was not written"


Runner = Callable[[str, Path, dict[str, str]], dict[str, str]]
RUNNERS: dict[str, tuple[Runner, Callable[[dict[str, str], Path], None]] | None] = {
    "quickstart": None,  # .ci/run runs it (test_ci_runs_the_quickstart_commands_in_order)
    "pipeline": (run_block, check_pipeline),
    "serve": (run_serving_block, check_serve),
    "infra": (run_block, check_infra),
    "agent": (run_block, check_agent),
}


@pytest.fixture
def readme_workspace(pipeline: tuple[Path, dict[str, str], float], tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A private copy of the shrunk pipeline workspace: the examples change params and outputs."""
    source, env, _ = pipeline
    root = tmp_path / "workspace"
    shutil.copytree(source, root, symlinks=True)
    return root, {**env, "PYTHONPATH": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name, runner in RUNNERS.items() if runner is not None])
def test_readme_example_runs(name: str, readme_workspace: tuple[Path, dict[str, str]]) -> None:
    root, env = readme_workspace
    found = [code for kind, value, code in blocks() if kind == "example" and value == name]
    assert found, f"README.md has no block marked example: {name}"
    runner = RUNNERS[name]
    assert runner is not None
    run, check = runner
    for code in found:
        check(run(code, root, env), root)
