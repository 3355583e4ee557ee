"""`infopt` sub-commands of serving/: serve, loadgen, cost (infopt/cli.py lifts them to the top level)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command("serve")
def serve(
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
    manifest: Path = typer.Option(Path("artifacts/manifest.json"), help="the pipeline's manifest"),
    deployment: str | None = typer.Option(None, help="params.deployments name: variant, engine, tenants, batching"),
    variant: str | None = typer.Option(None, help="serve this variant to all tenants (instead of --deployment)"),
    engine: str | None = typer.Option(None, help="onnxruntime | torch | vllm (default: the deployment's)"),
    model_dir: Path | None = typer.Option(None, help="artifact folder; overrides the manifest's path (containers)"),
    vllm_url: list[str] = typer.Option([], help="vLLM endpoint base URL (repeatable)"),
    vllm_model: str | None = typer.Option(None, help="model name vLLM serves (default: the variant)"),
    host: str = typer.Option("127.0.0.1", help="bind address"),
    port: int = typer.Option(8000, help="bind port"),
    log_level: str = typer.Option("info", help="uvicorn log level"),
    access_log: bool = typer.Option(
        False, help="log one line per request (costs CPU per request; /metrics counts them anyway)"
    ),
) -> None:
    """Run the inference gateway for one deployment (or one variant) with uvicorn (uvloop + httptools)."""
    from infopt.manifest import ManifestError, load_manifest
    from infopt.params import ParamsError, load_params
    from serving.app import create_app
    from serving.server import run_server
    from serving.settings import SettingsError, settings_from_params

    try:
        loaded = load_params(params)
        chosen_engine = engine or (loaded.deployment(deployment).engine if deployment else None)
        needs_manifest = chosen_engine != "vllm"
        settings = settings_from_params(
            loaded,
            load_manifest(manifest) if needs_manifest else None,
            deployment=deployment,
            variant=variant,
            engine=engine,
            model_dir=model_dir,
            vllm_urls=vllm_url,
            vllm_model=vllm_model,
            host=host,
            port=port,
            log_level=log_level,
        )
    except (ParamsError, ManifestError, SettingsError, KeyError) as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    console.print(f"serving {settings.model_name} ({settings.variant}, {settings.engine}) on http://{host}:{port}")
    run_server(create_app(settings), host=host, port=port, log_level=log_level, access_log=access_log)


@app.command("loadgen")
def loadgen(
    url: str = typer.Option("http://127.0.0.1:8000", help="gateway base URL"),
    model: str = typer.Option(..., help="model name (deployment or variant) as the gateway serves it"),
    stream: list[str] = typer.Option(
        ...,
        help="one load stream, repeatable: comma-separated key=value pairs of name, key (API key), "
        "mode (closed | open), concurrency, rate (req/s, open loop), count, duration (s), class",
    ),
    endpoint: str = typer.Option("classify", help="classify (/v1/classify) or v2 (/v2/models/{model}/infer)"),
    timeout_s: float = typer.Option(60.0, help="client timeout per request"),
    seed: int = typer.Option(0, help="seed of the Poisson arrivals"),
    out: Path = typer.Option(Path("runs/loadgen.json"), help="JSON report (runs/ is git-ignored)"),
) -> None:
    """Drive the gateway with closed- or open-loop load; per-tenant counts, throughput and latency to JSON.

    Example: two tenants of textcls-shared, standard closed-loop and batch open-loop at 50 req/s, for 20 s:

        infopt loadgen --model textcls-shared \\
          --stream name=globex,key=globex-demo-key,mode=closed,concurrency=4,duration=20 \\
          --stream name=initech,key=initech-demo-key,mode=open,rate=50,duration=20
    """
    from harness.loadgen import parse_stream, run_load, write_report

    if endpoint not in ("classify", "v2"):
        console.print(f"[red]--endpoint {endpoint!r} is not 'classify' or 'v2'[/red]")
        raise typer.Exit(2)
    try:
        streams = [parse_stream(spec) for spec in stream]
    except ValueError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    report = asyncio.run(run_load(url, streams, model=model, endpoint=endpoint, timeout_s=timeout_s, seed=seed))  # type: ignore[arg-type]
    write_report(report, out)
    table = Table("stream", "sent", "ok", "429", "503", "expired", "errors", "ok/s", "p50 ms", "p99 ms")
    for item in report.streams:
        table.add_row(
            item.name,
            str(item.sent),
            str(item.ok),
            str(item.status_429),
            str(item.status_503),
            str(item.expired),
            str(item.errors),
            f"{item.throughput_rps:.1f}",
            str(item.latency_ms.p50),
            str(item.latency_ms.p99),
        )
    console.print(table)
    console.print(f"report: {out}")


@app.command("cost")
def cost(
    params: Path = typer.Option(Path("params.yaml"), help="params file (cost rates, tenants, deployments)"),
    loadgen_report: Path | None = typer.Option(None, "--loadgen", help="a loadgen JSON report"),
    metrics_file: Path | None = typer.Option(None, "--metrics-file", help="a saved /metrics exposition"),
    metrics_url: str | None = typer.Option(None, "--metrics-url", help="a live gateway's /metrics URL"),
    hours: float | None = typer.Option(
        None, help="device hours used (required with metrics; default: the load test's)"
    ),
    replicas: int = typer.Option(1, help="replicas that ran the load test (device hours = duration * replicas)"),
    device: str = typer.Option("cpu", help="cpu | cuda: which params.cost.hourly_usd rate"),
    deployment: str | None = typer.Option(None, help="tenants_sharing = this deployment's tenant count"),
    out: Path | None = typer.Option(None, help="write the report as JSON"),
) -> None:
    """Per-tenant chargeback: the spec's equal split plus request-, device-time- and token-proportional splits
    (and each tenant's cost per 1k LLM tokens)."""
    from infopt.cost import CostError, chargeback, usage_from_loadgen, usage_from_metrics
    from infopt.params import ParamsError, load_params

    sources = [s for s in (loadgen_report, metrics_file, metrics_url) if s is not None]
    if len(sources) != 1:
        console.print("[red]give exactly one of --loadgen, --metrics-file, --metrics-url[/red]")
        raise typer.Exit(2)
    try:
        loaded = load_params(params)
        if loadgen_report is not None:
            usage, run_hours = usage_from_loadgen(loadgen_report, replicas)
            hours = run_hours if hours is None else hours
        else:
            if hours is None:
                console.print("[red]--hours is required with metrics (the gateway's counters have no duration)[/red]")
                raise typer.Exit(2)
            if metrics_url is not None:
                import httpx

                text = httpx.get(metrics_url, timeout=10).text
            else:
                text = metrics_file.read_text()  # type: ignore[union-attr]
            usage = usage_from_metrics(text)
        sharing = len(loaded.deployment(deployment).tenants) if deployment else None
        centers = {tenant.name: tenant.cost_center for tenant in loaded.tenants}
        report = chargeback(
            usage,
            device_hours=hours,
            device=device,
            cost=loaded.cost,
            tenants_sharing=sharing,
            cost_centers=centers,
            source=str(sources[0]),
        )
    except (ParamsError, CostError, KeyError, OSError) as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    table = Table(
        "tenant",
        "center",
        "requests",
        "share",
        "device s",
        "equal",
        "by requests",
        "by device s",
        title=f"{report.device_hours:.4g} device-h x {report.hourly_rate} {report.currency}/h = "
        f"{report.total_cost:.4g} {report.currency}; {report.tenants_sharing} tenants sharing",
        caption=f"costs in {report.currency}; equal = the spec's split (cost / tenants sharing)",
    )
    with_tokens = any(row.tokens for row in report.tenants)  # LLM deployments: tokens and cost per 1k tokens
    if with_tokens:
        table.add_column("tokens")
        table.add_column("per 1k tok")
    for column in table.columns[2:]:
        column.justify, column.no_wrap = "right", True
    for row in report.tenants:
        table.add_row(
            row.tenant,
            row.cost_center or "-",
            str(row.requests),
            f"{row.request_share:.3f}",
            f"{row.device_seconds:.3g}",
            f"{row.equal_split:.3g}",
            f"{row.request_split:.3g}",
            "-" if row.device_time_split is None else f"{row.device_time_split:.3g}",
            *(
                [str(row.tokens), "-" if row.cost_per_1k_tokens is None else f"{row.cost_per_1k_tokens:.3g}"]
                if with_tokens
                else []
            ),
        )
    console.print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report.model_dump(), indent=2) + "\n")
        console.print(f"report: {out}")
