"""`infopt challenge` (the measured optimization ladder) and `infopt dashboard build` (the static dashboard)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()
dashboard_app = typer.Typer(no_args_is_help=True, help="The static dashboard built from committed results.")


def challenge(
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    reduced: bool = typer.Option(False, "--reduced", help="the short form (CI): fewer cells, shorter runs"),
    out: Path | None = typer.Option(None, help="result folder (default benchmarks/results/challenge/<device>)"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
    teacher: Path | None = typer.Option(None, help="the fp32 teacher (default artifacts/variants/fp32/hf)"),
    budget_s: float | None = typer.Option(None, "--budget-s", help="wall-clock budget (default: the preset's)"),
    agent_file: Path = typer.Option(Path("benchmarks/results/agent/latest.json"), help="the agent's outcomes"),
    gateway: bool = typer.Option(True, "--gateway/--no-gateway", help="also measure through the real gateway"),
    threads: int | None = typer.Option(None, help="CPU engines' intra-op threads (default: benchmark.threads[-1])"),
) -> None:
    """The ladder: fp32 batch 1 -> precision -> dynamic batching -> launch overhead -> pruning -> fp8/int8, measured."""
    from challenge.ladder import LadderError, LadderOptions, run_ladder
    from challenge.report import ladder_table
    from infopt.device import DeviceError

    if device not in ("auto", "cpu", "cuda"):
        console.print(f"[red]--device {device!r} is not auto, cpu or cuda[/red]")
        raise typer.Exit(2)
    options = LadderOptions(
        device=device,
        reduced=reduced,
        out=out,
        params=params,
        teacher=teacher,
        budget_s=budget_s,
        agent_file=agent_file,
        gateway=gateway,
        threads=threads,
    )
    try:
        result = run_ladder(options, log=console.print)
    except (LadderError, DeviceError) as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    console.print(ladder_table(result), markup=False)
    console.print(f"status {result.status}; results in {options.out or 'benchmarks/results/challenge/'}")


@dashboard_app.command("build")
def dashboard_build(
    out: Path = typer.Option(Path("docs/dashboard"), help="folder for index.html and its PNGs"),
    root: Path = typer.Option(Path("."), help="repository root holding the committed results"),
) -> None:
    """Build the static dashboard (HTML + PNG charts) from the committed result files only."""
    from dashboard.build import build

    page = build(root, out)
    console.print(f"dashboard: {page}")


def register(app: typer.Typer) -> None:
    """Add `challenge` and `dashboard` to the root `infopt` app."""
    app.command("challenge")(challenge)
    app.add_typer(dashboard_app, name="dashboard")
