"""Measure a missing point the DVC way: as a DVC experiment a reviewer can inspect and re-run.

A node that lacks a number (a batch size the sweep did not measure, a variant not yet evaluated) asks for it
with `ExperimentRunner.run({"benchmark.batch_sizes": [1, 8]}, targets=["benchmark"])`:

    dvc exp run --temp -n <name> -S benchmark.batch_sizes=[1, 8] benchmark

runs in a temporary copy (the workspace and params.yaml are untouched), and the metrics are read back from
`dvc exp show --json`. Several points at once: `queue(...)` each, then `run_queued()` (`dvc exp run
--run-all`). The experiment's name is derived from the baseline commit and the changes, so asking again on
the same commit reuses the experiment instead of re-running it. Key paths may use params names
(`deployments[textcls-premium].replicas.min`); they are turned into DVC's index form.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from agent.contract import Evidence, ParamValue
from agent.params_edit import dvc_key, render


class ExperimentError(RuntimeError):
    """dvc failed or the experiment is not found; the message carries dvc's output tail."""


@dataclass(frozen=True)
class ExperimentResult:
    name: str
    rev: str  # the experiment's commit
    baseline: str  # the commit it was run against
    params: dict[str, Any]  # params file -> its data in the experiment
    metrics: dict[str, Any]  # metrics file -> its data

    def metric(self, file: str, key: str) -> Any:
        """A metric by file and dotted key (`metric("metrics/benchmark.json", "fp32.onnxruntime.0.p99")`)."""
        node: Any = self.metrics.get(file)
        if node is None:
            raise ExperimentError(f"experiment {self.name}: no metrics file {file!r} (has {sorted(self.metrics)})")
        for part in key.split("."):
            if isinstance(node, list) and part.isdigit():
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise ExperimentError(f"experiment {self.name}: {file} has no key {key!r}")
        return node

    def evidence(self, detail: str = "") -> Evidence:
        return Evidence(
            kind="dvc_experiment",
            ref=self.name,
            detail=(detail + "; " if detail else "")
            + f"commit {self.rev[:10]} on {self.baseline[:10]}: `dvc exp show`, `dvc exp apply {self.name}`",
        )


def set_value_arg(key: str, value: ParamValue) -> str:
    """`key=value` as `dvc exp run -S` parses it (Hydra override grammar: YAML-like flow values)."""
    return f"{key}={render(value)}"


def _has_key(data: Any, dotted: str) -> bool:
    node = data
    for part in dotted.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True


class ExperimentRunner:
    def __init__(
        self,
        repo: Path,
        *,
        dvc: str = "dvc",
        params_file: str = "params.yaml",
        timeout_s: float = 3600.0,
    ) -> None:
        self.repo = Path(repo)
        self.dvc = dvc
        self.params_file = params_file
        self.timeout_s = timeout_s
        self._read: dict[tuple[str, str, str], tuple[str, ExperimentResult, Evidence]] = {}  # run_and_read's answers

    # ------------------------------------------------------------------ plumbing
    def _dvc(self, *args: str, timeout_s: float | None = None) -> str:
        env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
        try:
            done = subprocess.run(
                [self.dvc, *args],
                cwd=self.repo,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s or self.timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise ExperimentError(
                f"`dvc {' '.join(args)}` did not finish within {timeout_s or self.timeout_s} s"
            ) from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout)[-2000:]
            raise ExperimentError(f"`dvc {' '.join(args)}` exited with {done.returncode}:\n{tail}")
        return done.stdout

    def _baseline(self) -> str:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=self.repo, capture_output=True, text=True)
        if done.returncode != 0:
            raise ExperimentError(f"{self.repo}: not a git repository with a commit ({done.stderr.strip()})")
        return done.stdout.strip()

    def set_args(self, changes: Mapping[str, ParamValue]) -> list[str]:
        """`-S file:key=value` per change; a key the params file does not have yet gets Hydra's `++` (add or
        override), so an optional setting left at its default in params.yaml can still be set."""
        data = YAML(typ="safe").load((self.repo / self.params_file).read_text())
        args: list[str] = []
        for path, value in changes.items():
            key = dvc_key(path, data)
            add = "" if _has_key(data, key) else "++"
            args += ["-S", set_value_arg(f"{self.params_file}:{add}{key}", value)]
        return args

    def read(self, result: ExperimentResult, path: str) -> str:
        """A file as the experiment left it: in its commit (outputs with `cache: false`), else in DVC's cache
        (a cached output, found through the experiment's dvc.lock; `--temp` runs share the workspace cache)."""
        done = subprocess.run(["git", "show", f"{result.rev}:{path}"], cwd=self.repo, capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout
        import dvc.api
        from dvc.exceptions import DvcException

        try:
            return str(dvc.api.read(path, repo=str(self.repo), rev=result.rev))
        except (DvcException, FileNotFoundError) as error:
            raise ExperimentError(
                f"experiment {result.name}: no {path} in its commit ({done.stderr.strip()}) nor among its DVC "
                f"outputs ({type(error).__name__}: {error})"
            ) from None

    def run_and_read(
        self, changes: Mapping[str, ParamValue], stage: str, path: str, what: str
    ) -> tuple[str, ExperimentResult, Evidence]:
        """Run `stage` with `changes` as an experiment (or reuse it by name) and read `path` from it; the evidence
        names the experiment and the command that re-runs it. Asked again in this process (another deployment
        needing the same experiment), the answer is kept instead of listing and reading the experiment again."""
        key = (self.name_for(changes), stage, path)
        if key not in self._read:
            result = self.run(changes, name=key[0], targets=[stage])
            command = "dvc exp run --temp " + " ".join(self.set_args(changes)) + f" {stage}"
            self._read[key] = (self.read(result, path), result, result.evidence(f"{what}: {command}"))
        return self._read[key]

    def name_for(self, changes: Mapping[str, ParamValue], prefix: str = "agent") -> str:
        key = json.dumps({"baseline": self._baseline(), "changes": changes}, sort_keys=True, default=str)
        return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"

    # ------------------------------------------------------------------ experiments
    def show(self) -> list[ExperimentResult]:
        """Every finished experiment of the workspace's baseline commit, newest first (dvc's order)."""
        rows = json.loads(self._dvc("exp", "show", "--json", timeout_s=300) or "[]")
        found = []
        for row in rows:
            for experiment in row.get("experiments") or []:
                revs = experiment.get("revs") or []
                state = (experiment.get("executor") or {}).get("state")  # None or "success" once finished
                if state not in (None, "success") or not revs or revs[0].get("error"):
                    continue  # queued, running or failed: no results yet
                data = revs[0].get("data") or {}
                found.append(
                    ExperimentResult(
                        name=experiment.get("name") or revs[0]["rev"][:7],
                        rev=revs[0]["rev"],
                        baseline=row["rev"],
                        params={file: item.get("data", {}) for file, item in (data.get("params") or {}).items()},
                        metrics={file: item.get("data", {}) for file, item in (data.get("metrics") or {}).items()},
                    )
                )
        return found

    def find(self, name: str) -> ExperimentResult | None:
        return next((result for result in self.show() if result.name == name), None)

    def run(
        self, changes: Mapping[str, ParamValue], *, name: str | None = None, targets: Sequence[str] = ()
    ) -> ExperimentResult:
        """Run one experiment in a temporary copy (workspace untouched) and return its params and metrics;
        an experiment of the same name on the same baseline is reused, not re-run."""
        name = name or self.name_for(changes)
        existing = self.find(name)
        if existing is not None:
            return existing
        self._dvc("exp", "run", "--temp", "-n", name, *self.set_args(changes), *targets)
        result = self.find(name)
        if result is None:
            raise ExperimentError(f"dvc exp run -n {name} finished but `dvc exp show` does not list it")
        return result

    def queue(self, changes: Mapping[str, ParamValue], *, name: str | None = None, targets: Sequence[str] = ()) -> str:
        """Stage an experiment in DVC's run queue; `run_queued` executes the queue."""
        name = name or self.name_for(changes)
        if self.find(name) is None:
            self._dvc("exp", "run", "--queue", "-n", name, *self.set_args(changes), *targets)
        return name  # finished or queued now

    def run_queued(self, jobs: int = 1) -> None:
        self._dvc("exp", "run", "--run-all", "-j", str(jobs))

    def results(self, names: Sequence[str]) -> list[ExperimentResult]:
        by_name = {result.name: result for result in self.show()}
        missing = [name for name in names if name not in by_name]
        if missing:
            raise ExperimentError(f"experiments {missing} are not in `dvc exp show` (failed, or still queued)")
        return [by_name[name] for name in names]
