"""`infopt pipeline ...`: read-only views of what the DVC pipeline produced."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)


@app.callback()
def pipeline() -> None:
    """The model pipeline: summary table, stage helpers."""


@app.command("summary")
def summary(
    manifest: Path = typer.Option(Path("artifacts/manifest.json"), help="the manifest the pipeline wrote"),
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON instead of a table"),
) -> None:
    """One line per variant: accuracy, loss, p99 at batch 1 and 16, best throughput, cost/1k, size."""
    from infopt.manifest import ManifestError, load_manifest
    from model_builds.summary import render_table, summary_rows

    console = Console(width=max(Console().width, 120))  # the table is ~110 columns wide
    try:
        loaded = load_manifest(manifest)
    except ManifestError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    if as_json:
        rows = [row.as_dict() for row in summary_rows(loaded)]
        typer.echo(
            json.dumps(
                {"device": loaded.device, "variants": rows, "fingerprint": loaded.fingerprint.model_dump()}, indent=2
            )
        )
        return
    console.print(render_table(loaded))
