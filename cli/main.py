"""The `infopt` command: one entry point whose sub-commands belong to the parts of the project."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from infopt.params import ParamsError, load_params

app = typer.Typer(no_args_is_help=True, help="Optimize, measure, serve and deploy inference models.")
params_app = typer.Typer(no_args_is_help=True, help="Validate and inspect params.yaml.")
artifact_app = typer.Typer(no_args_is_help=True, help="Pack, fetch and verify content-addressed artifacts.")
app.add_typer(params_app, name="params")
app.add_typer(artifact_app, name="artifact")
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


@artifact_app.command("pack")
def artifact_pack(
    folder: Path = typer.Argument(..., help="a variant artifact folder (e.g. artifacts/variants/int8-dynamic/onnx)"),
    out: Path = typer.Option(Path("dist/artifacts"), help="where <sha256>.tar.gz is written"),
) -> None:
    """Bundle an artifact as <sha256>.tar.gz for the artifact store the serving pods fetch from."""
    from infopt.artifact_store import pack

    console.print(str(pack(folder, out)))


@artifact_app.command("fetch")
def artifact_fetch(
    url: str = typer.Option(..., help="s3://, gs://, https://, http://, file:// URL or path of <sha256>.tar.gz"),
    sha256: str = typer.Option(..., help="the content hash the manifest records"),
    dest: Path = typer.Option(..., help="folder to unpack into"),
    timeout_s: float | None = typer.Option(None, "--timeout-s", help="download timeout (default: the store's)"),
) -> None:
    """Download, unpack and verify an artifact (the serving pod's init step); exits 1 on any mismatch."""
    from infopt.artifact_store import ArtifactError, fetch

    try:
        fetch(url, sha256, dest, **({"timeout_s": timeout_s} if timeout_s is not None else {}))
    except ArtifactError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    console.print(f"[green]{dest} verified[/green] sha256={sha256}")


@artifact_app.command("verify")
def artifact_verify(path: Path, sha256: str) -> None:
    """Check a local artifact folder or file against its expected content hash."""
    from infopt.artifact_store import ArtifactError, verify

    try:
        verify(path, sha256)
    except ArtifactError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    console.print(f"[green]{path} matches[/green]")


def _register_subcommands() -> None:
    """Each part owns its sub-app; their modules import heavy libraries only inside commands."""
    from cli.agent import app as agent_app
    from cli.challenge import register as register_challenge
    from cli.images import app as images_app
    from cli.infra import app as infra_app
    from cli.llm import app as llm_app
    from cli.pipeline import app as pipeline_app
    from cli.serve import app as serving_app

    app.add_typer(pipeline_app, name="pipeline", help="The model pipeline: summary table, stage helpers.")
    app.add_typer(infra_app, name="infra", help="Offline Pulumi plan of the Kubernetes deployment.")
    app.add_typer(images_app, name="images", help="Build the serving images (docker or podman), tagged by content.")
    app.add_typer(agent_app, name="agent", help="Evidence-backed pull requests that change params.yaml.")
    app.add_typer(llm_app, name="llm", help="The causal-LM path: the serving-framework comparison.")
    for command in serving_app.registered_commands:
        app.registered_commands.append(command)
    register_challenge(app)  # `infopt challenge` and `infopt dashboard build`


def main() -> None:
    _register_subcommands()
    app()
