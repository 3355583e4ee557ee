"""`infopt infra` sub-commands: the offline plan of the Kubernetes deployment, and the policy pack's config."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console()


def _available(stacks_dir: Path) -> list[str]:
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in stacks_dir.glob("Pulumi.*.yaml"))


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
    from infopt.manifest import ManifestError, load_manifest
    from infopt.params import ParamsError, load_params
    from infra.plan import plan, write_plan
    from infra.stack_config import StackConfigError, load_stack_config, stack_file
    from infra.topology import TopologyError

    if stack not in _available(stacks_dir):
        console.print(f"[red]unknown stack {stack!r}; {stacks_dir} has {_available(stacks_dir)}[/red]")
        raise typer.Exit(2)
    try:
        params = load_params(params_path)
        manifest = load_manifest(manifest_path)
        stack_config = load_stack_config(stack_file(stack, stacks_dir))
        result = plan(params, manifest, stack_config, stack)
    except (ParamsError, ManifestError, StackConfigError, TopologyError) as error:
        console.print(f"[red]{type(error).__name__}: {error}[/red]")
        raise typer.Exit(2) from None
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
    for error in result.schema_errors:
        console.print(f"[red]schema: {error['resource']} {error['path']}: {error['message']}[/red]", soft_wrap=True)
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
