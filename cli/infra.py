"""`infopt infra` sub-commands: the offline plan of the Kubernetes deployment, and the policy pack's config."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from infopt.manifest import Manifest
    from infra.plan import PlanResult
    from infra.stack_config import StackConfig

app = typer.Typer(no_args_is_help=True)
console = Console()


def _available(stacks_dir: Path) -> list[str]:
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in stacks_dir.glob("Pulumi.*.yaml"))


def _plan_or_exit(
    stack: str, params_path: Path, manifest_path: Path, stacks_dir: Path
) -> tuple[Manifest, StackConfig, PlanResult]:
    """Load the inputs and plan `stack`; bad input (unknown stack, params, manifest, stack config, topology)
    is printed by name and exits 2 before anything is declared."""
    from infopt.manifest import ManifestError, load_manifest
    from infopt.params import ParamsError, load_params
    from infra.plan import plan
    from infra.stack_config import StackConfigError, load_stack_config, stack_file
    from infra.topology import TopologyError

    if stack not in _available(stacks_dir):
        console.print(f"[red]unknown stack {stack!r}; {stacks_dir} has {_available(stacks_dir)}[/red]")
        raise typer.Exit(2)
    try:
        manifest = load_manifest(manifest_path)
        stack_config = load_stack_config(stack_file(stack, stacks_dir))
        return manifest, stack_config, plan(load_params(params_path), manifest, stack_config, stack)
    except (ParamsError, ManifestError, StackConfigError, TopologyError) as error:
        console.print(f"[red]{type(error).__name__}: {error}[/red]")
        raise typer.Exit(2) from None


@app.callback()
def _infra() -> None:
    """Offline Pulumi plan of the Kubernetes deployment (mocks + schema validation + policy pack)."""


@app.command("plan")
def plan_command(
    stack: str = typer.Option(..., help="stack name: a stacks/Pulumi.<stack>.yaml file (dev, staging, prod)"),
    params_path: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
    manifest_path: Path = typer.Option(Path("artifacts/manifest.json"), "--manifest", help="pipeline manifest"),
    out: Path = typer.Option(Path("plan"), help="folder for <stack>.yaml and <stack>.summary.json"),
    stacks_dir: Path = typer.Option(Path("stacks"), help="folder of the Pulumi.<stack>.yaml files"),
) -> None:
    """PLAN (never apply) a stack: exits 2 on bad input, 1 on a schema error or policy violation."""
    from infra.plan import write_plan

    _, _, result = _plan_or_exit(stack, params_path, manifest_path, stacks_dir)
    manifests, summary = write_plan(result, out)

    table = Table(title=f"PLAN for stack {stack} (offline; nothing applied) - Kubernetes {result.kubernetes_version}")
    table.add_column("kind")
    table.add_column("count", justify="right")
    for kind, count in result.counts().items():
        table.add_row(kind, str(count))
    table.add_row("[bold]total[/bold]", f"[bold]{len(result.resources)}[/bold]")
    console.print(table)
    skipped = len(result.schema_skipped)
    console.print(
        f"schema (strict, {result.kubernetes_version}): {len(result.resources) - skipped} validated, "
        f"{skipped} custom resources without a bundled schema, {len(result.schema_errors)} errors"
    )
    for failure in result.schema_errors:
        console.print(
            f"[red]schema: {failure['resource']} {failure['path']}: {failure['message']}[/red]", soft_wrap=True
        )
    if result.violations:
        console.print(f"[red]{len(result.violations)} MANDATORY policy violation(s):[/red]")
        for item in result.violations:  # one unwrapped line each, so names stay greppable
            console.print(
                f"[red]  {item['policy']}[/red] {item['resource'].rsplit('::', 1)[-1]}: {item['message']}",
                soft_wrap=True,
                highlight=False,
            )
    else:
        console.print("policies: all clean")
    console.print(f"wrote {manifests} and {summary}", soft_wrap=True)
    if not result.ok:
        raise typer.Exit(1)


@app.command("run")
def run_command(
    stack: str = typer.Option("dev", help="stack name: a stacks/Pulumi.<stack>.yaml file"),
    params_path: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
    manifest_path: Path = typer.Option(Path("artifacts/manifest.json"), "--manifest", help="pipeline manifest"),
    stacks_dir: Path = typer.Option(Path("stacks"), help="folder of the Pulumi.<stack>.yaml files"),
    bundles: Path = typer.Option(Path("dist/artifacts"), help="folder of <sha256>.tar.gz the init containers fetch"),
    pack_missing: bool = typer.Option(True, help="pack a missing bundle from the manifest's artifact folder"),
    local_base: bool = typer.Option(False, help="build the images on a Debian base made with mmdebstrap"),
    work_dir: Path = typer.Option(Path("build/kube-play"), help="where the played Kubernetes YAML is written"),
    ready_timeout_s: float = typer.Option(300.0, help="seconds each pod may take to pass its readiness probe"),
    hold: bool = typer.Option(True, help="keep the pods until Ctrl-C; --no-hold: check readiness, then remove"),
) -> None:
    """RUN the stack's planned Deployments on this machine with `podman kube play` (127.0.0.1 only).

    Plans the stack (schemas + policies must be clean), builds the images, serves the artifact bundles on
    127.0.0.1, plays each Deployment with its config (the Secret's params.yaml and the ConfigMap's manifest.json,
    as one ConfigMap: podman 4.3 has no projected volumes) and waits for the planned readiness probe.
    Services, HPAs, NetworkPolicies and quotas are not run by podman (docs/images.md)."""
    import time

    from harness.images import IMAGES as IMAGE_SPECS
    from harness.images import BuildPlan, ContainerEngine, ImageBuildError, build_base, build_image
    from harness.kube_play import KubePlayError, wait_ready
    from harness.stack_run import (
        StackRunError,
        check_bundles,
        local_images_needed,
        planned_artifacts,
        planned_images,
        run_stack,
    )
    from infopt.artifact_store import ArtifactError, pack

    manifest, stack_config, result = _plan_or_exit(stack, params_path, manifest_path, stacks_dir)
    if not result.ok:
        console.print(f"[red]the plan of {stack} is not clean; see `infopt infra plan --stack {stack}`[/red]")
        raise typer.Exit(1)
    documents = [resource.manifest for resource in result.resources]
    try:
        by_sha = {a.sha256: a for v in manifest.variants for a in v.artifacts}
        for sha in set(planned_artifacts(documents).values()):
            if not (bundles / f"{sha}.tar.gz").is_file() and pack_missing and Path(by_sha[sha].path).exists():
                console.print(f"packing {by_sha[sha].path} -> {pack(Path(by_sha[sha].path), bundles)}")
        check_bundles(documents, bundles)  # before any image is built
        stack_images = {key: image.ref(stack_config.image_registry) for key, image in stack_config.images.items()}
        needed = local_images_needed(planned_images(documents), stack_images)
        engine = ContainerEngine.detect("podman")
        base = build_base(engine)[0] if local_base else None
        build_plan = BuildPlan(engine=engine, base_image=base)
        built = {name: build_image(build_plan, IMAGE_SPECS[name]).ref for name in sorted(set(needed.values()))}
        images = {planned: built[name] for planned, name in needed.items()}
        with run_stack(
            documents,
            artifact_base_url=stack_config.artifact_store.base_url,
            images=images,
            bundles=bundles,
            folder=work_dir,
        ) as running:
            table = Table(title=f"stack {stack} running under podman kube play (127.0.0.1 only)")
            for column in ("deployment", "pod", "gateway", "ready after s"):
                table.add_column(column, overflow="fold")
            for pod in running.pods:
                table.add_row(pod.deployment, pod.pod, pod.gateway_url, f"{wait_ready(pod, ready_timeout_s):.1f}")
            console.print(table)
            console.print("not run by podman: Services, HPAs, PDBs, NetworkPolicies, quotas, RBAC (see the plan)")
            if hold:
                console.print("Ctrl-C removes the pods")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    console.print("removing the pods")
    except (StackRunError, KubePlayError, ImageBuildError, ArtifactError, KeyError) as error:
        console.print(f"[red]{type(error).__name__}: {error}[/red]", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None


@app.command("policy-config")
def policy_config_command(
    stack: str = typer.Option(..., help="stack name: a stacks/Pulumi.<stack>.yaml file"),
    manifest_path: Path = typer.Option(Path("artifacts/manifest.json"), "--manifest", help="pipeline manifest"),
    out: Path = typer.Option(
        ..., help="JSON file for `pulumi up --policy-pack-config` / `pulumi policy enable --config`"
    ),
    stacks_dir: Path = typer.Option(Path("stacks"), help="folder of the Pulumi.<stack>.yaml files"),
) -> None:
    """Write the policy pack's config for a stack: the manifest's deployable artifacts and the digest flag."""
    import json

    from infopt.manifest import ManifestError, load_manifest
    from infra.policy_config import policy_config
    from infra.stack_config import StackConfigError, load_stack_config, stack_file

    try:
        config = policy_config(load_manifest(manifest_path), load_stack_config(stack_file(stack, stacks_dir)))
    except (ManifestError, StackConfigError) as error:
        console.print(f"[red]{type(error).__name__}: {error}[/red]")
        raise typer.Exit(2) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    artifacts = config["artifact-is-deployable"]["artifacts"]
    allowed = sum(1 for decision in artifacts.values() if decision["deployable"])
    console.print(f"wrote {out}: {allowed} of {len(artifacts)} manifest artifacts deployable", soft_wrap=True)
