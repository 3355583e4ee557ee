"""The `infopt` command: one entry point whose sub-commands belong to the parts of the project."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from infopt.params import ParamsError, load_params

app = typer.Typer(no_args_is_help=True, help="Optimize, measure, serve and deploy inference models.")
params_app = typer.Typer(no_args_is_help=True, help="Validate and inspect params.yaml.")
app.add_typer(params_app, name="params")
console = Console()


@params_app.command("check")
def params_check(path: Path = typer.Option(Path("params.yaml"), help="params file to validate")) -> None:
    """Validate params.yaml against the schema; exits 2 and names each bad field."""
    try:
        params = load_params(path)
    except ParamsError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    console.print(
        f"[green]{path} is valid[/green]: preset {params.model.preset}, {len(params.variants)} variants, "
        f"{len(params.tenants)} tenants, {len(params.deployments)} deployments"
    )


def _register_subcommands() -> None:
    """Each part owns its sub-app; their modules import heavy libraries only inside commands."""
    from infra.cli import app as infra_app
    from model_builds.cli import app as pipeline_app
    from serving.cli import app as serving_app

    app.add_typer(pipeline_app, name="pipeline", help="The model pipeline: summary table, stage helpers.")
    app.add_typer(infra_app, name="infra", help="Offline Pulumi plan of the Kubernetes deployment.")
    for command in serving_app.registered_commands:
        app.registered_commands.append(command)


def main() -> None:
    _register_subcommands()
    app()
