"""Pulumi entry point (`main: infra/` in Pulumi.yaml): read config at the edge, then wire the components.

Pulumi's Python language host runs this file with `infra/` as the working directory and only `infra/` on
sys.path (runpy.run_path of the program directory). So the project root, where params.yaml, artifacts/ and
the `infopt`/`infra` packages live, is found from this file's location (Pulumi's own project root when the
engine reports one), never from the working directory; INFOPT_PARAMS / INFOPT_MANIFEST, when relative,
are taken from the project root too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def project_root() -> Path:
    """The folder holding Pulumi.yaml: the engine's root directory if it names one, else this file's parent's."""
    import pulumi

    reported = pulumi.get_root_directory()
    if reported and (Path(reported) / "Pulumi.yaml").is_file():
        return Path(reported).resolve()
    here = Path(__file__).resolve().parents[1]
    if not (here / "Pulumi.yaml").is_file():
        raise FileNotFoundError(f"{here}: no Pulumi.yaml above {Path(__file__).resolve()}; cannot find the project")
    return here


def from_root(root: Path, variable: str, default: str) -> Path:
    path = Path(os.environ.get(variable) or default)
    return path if path.is_absolute() else root / path


def main() -> None:
    root = project_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # the language host put only infra/ there

    import pulumi
    import pulumi_kubernetes as kubernetes

    from infopt.manifest import load_manifest
    from infopt.params import load_params
    from infra.program import build
    from infra.stack_config import PROJECT, from_pulumi_config, pulumi_config_keys

    config = pulumi.Config(PROJECT)
    stack_config = from_pulumi_config(config, pulumi_config_keys(), pulumi.get_stack())
    params = load_params(from_root(root, "INFOPT_PARAMS", "params.yaml"))
    manifest = load_manifest(from_root(root, "INFOPT_MANIFEST", "artifacts/manifest.json"))
    provider = kubernetes.Provider("k8s", context=stack_config.kube_context)
    components = build(params, manifest, stack_config, provider)

    pulumi.export("namespaces", sorted(components.tenants))
    pulumi.export("deployments", {name: svc.plan.namespace for name, svc in components.services.items()})
    pulumi.export("hosts", {name: svc.host for name, svc in components.services.items() if svc.host})
    pulumi.export("priorityClasses", components.priority_classes.names)
    pulumi.export("adapterRules", components.metrics.rules_yaml)
    pulumi.export("workloadIdentitySubjects", components.topology.workload_identity_subjects)


if __name__ == "__main__":
    main()
