"""What a node may read: the evidence of one agent run, loaded once at the edge (the CLI) and passed down.

Nodes get an `AgentContext` and read only what they need from it: the params (text and validated), the
manifest (loaded on first use, so a node that does not need it runs without it), a traffic source, and the
DVC-experiment hook for measuring missing points. Nothing here edits files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.contract import Evidence
from agent.experiments import ExperimentRunner
from agent.frontend import FrontEndCpu
from agent.prometheus import PrometheusClient, frontend_cpu_from_prometheus, traffic_from_prometheus
from agent.traffic import TrafficTrace, read_trace
from infopt.deployments import ResolvedDeployment
from infopt.manifest import BatchPoint, Manifest, ManifestError, load_manifest
from infopt.params import Params, parse_params


class BatchMeasurer(Protocol):
    """Measures the batch sizes a deployment's sweep lacks on its real engine (agent/measure.py)."""

    def __call__(self, resolved: ResolvedDeployment) -> Callable[[int], BatchPoint]: ...

    def evidence(self, resolved: ResolvedDeployment, sizes: Sequence[int]) -> list[Evidence]:
        """Where a reviewer finds (and re-runs) the measurements of `sizes`."""
        ...


class TrafficSource(Protocol):
    def __call__(self, deployment: str, classes: Sequence[str]) -> TrafficTrace: ...


@dataclass(frozen=True)
class TraceFileTraffic:
    """Traffic from a trace file (agent/traffic.py documents the format)."""

    path: Path

    def __call__(self, deployment: str, classes: Sequence[str]) -> TrafficTrace:
        return read_trace(self.path, deployment=deployment, classes=classes)


@dataclass(frozen=True)
class PrometheusTraffic:
    """Traffic from a Prometheus server scraping the gateways (range queries of infopt_requests_total)."""

    client: PrometheusClient
    window_s: float = 3600.0
    step_s: float = 60.0
    rate_window: str = "1m"
    end: float | None = None

    def _window(self) -> dict[str, Any]:
        """The range every query of this source reads: the traffic and the front-end CPU share it."""
        return {"window_s": self.window_s, "step_s": self.step_s, "rate_window": self.rate_window, "end": self.end}

    def __call__(self, deployment: str, classes: Sequence[str]) -> TrafficTrace:
        return traffic_from_prometheus(self.client, deployment, **self._window()).for_classes(classes)

    def frontend_cpu(self, deployment: str) -> FrontEndCpu | None:
        """The gateways' front-end CPU per request over the same window as the traffic (None: not exported)."""
        return frontend_cpu_from_prometheus(self.client, deployment, **self._window())


@dataclass
class AgentContext:
    root: Path  # the repository the proposal is made against
    params_path: Path
    params_text: str  # as read: edits are made on this text
    params: Params
    manifest_path: Path
    traffic: TrafficSource | None = None
    deployments: tuple[str, ...] = ()  # restrict the nodes to these deployments (empty: all)
    experiments: ExperimentRunner | None = None  # nodes may run DVC experiments for missing evidence (None: not)
    batch_measurer: BatchMeasurer | None = None  # measures batch sizes the sweep lacks (None: sweep only)
    # Manifests built by the nodes' DVC experiments, by experiment name: a recommendation that enables a variant
    # (Recommendation.manifest_experiment) is planned against the manifest where that variant exists.
    experiment_manifests: dict[str, Manifest] = field(default_factory=dict, repr=False)
    _manifest: Manifest | None = field(default=None, repr=False)

    @classmethod
    def load(
        cls,
        root: Path,
        *,
        params_path: Path | None = None,
        manifest_path: Path | None = None,
        traffic: TrafficSource | None = None,
        deployments: Sequence[str] = (),
        experiments: ExperimentRunner | None = None,
        batch_measurer: BatchMeasurer | None = None,
    ) -> AgentContext:
        from ruamel.yaml import YAML

        root = Path(root)
        params_path = params_path or root / "params.yaml"
        text = params_path.read_text()
        params = parse_params(YAML(typ="safe").load(text), str(params_path))
        known = [deployment.name for deployment in params.deployments]
        unknown = [name for name in deployments if name not in known]
        if unknown:
            raise KeyError(f"unknown deployment(s) {unknown}; params.yaml has {known}")
        return cls(
            root=root,
            params_path=params_path,
            params_text=text,
            params=params,
            manifest_path=manifest_path or root / "artifacts" / "manifest.json",
            traffic=traffic,
            deployments=tuple(deployments),
            experiments=experiments,
            batch_measurer=batch_measurer,
        )

    def manifest(self) -> Manifest:
        """The pipeline's manifest; ManifestError (named file) when `dvc repro` has not produced it."""
        if self._manifest is None:
            self._manifest = load_manifest(self.manifest_path)
        return self._manifest

    def manifest_for(self, experiment: str | None) -> Manifest:
        """The manifest a recommendation deploys: its experiment's, else the pipeline's."""
        if experiment is None:
            return self.manifest()
        if experiment not in self.experiment_manifests:
            raise ManifestError(f"experiment {experiment}: its manifest was not read in this run")
        return self.experiment_manifests[experiment]

    def selected_deployments(self) -> list[str]:
        names = [deployment.name for deployment in self.params.deployments]
        return [name for name in names if not self.deployments or name in self.deployments]

    def relative(self, path: Path) -> str:
        """`path` relative to the repository root where possible (how evidence names files)."""
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)
