"""`infopt agent ...`: evidence-backed pull requests that change params.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)
console = Console()
DEFAULT_OUT = Path("plan/agent")


@app.callback()
def agent() -> None:
    """Propose params.yaml changes as pull requests, from the pipeline's evidence and live traffic."""


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def _print_outcome(outcome: object) -> None:
    from agent.contract import NoChange, Recommendation, Refusal

    target = getattr(outcome, "target", None)
    label = target.label if target is not None else ""
    if target is not None and target.deployment and target.variant:
        label = f"{target.deployment} ({target.variant})"
    if isinstance(outcome, Recommendation):
        console.print(f"[green]recommend[/green] {outcome.node} {label}: {outcome.summary}", soft_wrap=True)
        for note in outcome.notes:
            console.print(f"    {note}", soft_wrap=True, markup=False, highlight=False)
    elif isinstance(outcome, Refusal):
        console.print(
            f"[yellow]refused[/yellow] {outcome.node} {label} ({outcome.guardrail}): {outcome.reason}",
            soft_wrap=True,
        )
    elif isinstance(outcome, NoChange):
        console.print(f"no change {outcome.node} {label}: {outcome.reason}", soft_wrap=True)


@app.command("propose")
def propose_command(
    params_path: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
    manifest_path: Path = typer.Option(Path("artifacts/manifest.json"), "--manifest", help="pipeline manifest"),
    trace: Path | None = typer.Option(None, help="traffic trace file (JSONL or CSV; docs/agent.md)"),
    prometheus_url: str | None = typer.Option(
        None, envvar="PROMETHEUS_URL", help="Prometheus scraping the gateways (range queries of their metrics)"
    ),
    window: str = typer.Option("1h", help="Prometheus: how far back to read traffic (s/m/h/d)"),
    step: str = typer.Option("60s", help="Prometheus: resolution of the traffic series"),
    rate_window: str = typer.Option("1m", help="Prometheus: the rate() window"),
    deployment: list[str] = typer.Option([], help="only these deployments (repeatable; default all)"),
    node: list[str] = typer.Option(
        [], help="only these nodes, in this order (repeatable: batching, quantization, profiler, scaling; default all)"
    ),
    measure_missing: bool = typer.Option(
        False,
        "--measure-missing",
        help="run DVC experiments for missing evidence (`dvc exp run --temp`; listed by `dvc exp show`, cited in "
        "the PR): batching measures the batch sizes the sweep lacks, the profiler profiles the served batch",
    ),
    measure_in_process: bool = typer.Option(
        False,
        "--measure-in-process",
        help="with --measure-missing: time them in this process instead (faster; no experiment to re-run)",
    ),
    stack: str = typer.Option("prod", help="stack whose offline infra plan the proposal is checked against"),
    stacks_dir: Path = typer.Option(Path("stacks"), help="folder of the Pulumi.<stack>.yaml files"),
    no_plan: bool = typer.Option(
        False, "--no-plan", help="skip the infra plan (the policy guardrail then cannot pass)"
    ),
    out: Path = typer.Option(DEFAULT_OUT, help="folder for the PR body (<branch>.md) and the proposal JSON"),
    open_pr: bool = typer.Option(False, "--open-pr", help="commit on the stable branch, push, open or update the PR"),
    remote: str = typer.Option("origin", help="git remote to push to"),
    base: str | None = typer.Option(None, help="base branch of the PR (default: the current branch)"),
    repo_slug: str | None = typer.Option(
        None, "--repo", envvar="GITHUB_REPOSITORY", help="owner/name on GitHub (default: from the remote URL)"
    ),
) -> None:
    """Run the agent's nodes and write ONE proposal (dry run by default: print it, write the PR body)."""
    from agent.context import AgentContext, PrometheusTraffic, TraceFileTraffic, TrafficSource
    from agent.experiments import ExperimentRunner
    from agent.measure import ExperimentMeasurer, ServedShapeMeasurer
    from agent.nodes import registered_nodes, run_nodes
    from agent.prometheus import PrometheusClient
    from agent.proposal import propose
    from infopt.params import ParamsError

    if open_pr and no_plan:
        console.print("[red]--open-pr needs the infra plan: the policy guardrail must pass before a PR opens[/red]")
        raise typer.Exit(2)
    if trace is not None and prometheus_url:
        console.print("[red]give --trace or --prometheus-url, not both[/red]")
        raise typer.Exit(2)
    traffic: TrafficSource | None = None
    if trace is not None:
        traffic = TraceFileTraffic(trace)
    elif prometheus_url:
        traffic = PrometheusTraffic(
            PrometheusClient(prometheus_url),
            window_s=_duration(window),
            step_s=_duration(step),
            rate_window=rate_window,
        )
    if measure_in_process and not measure_missing:
        console.print("[red]--measure-in-process changes how --measure-missing measures: give both[/red]")
        raise typer.Exit(2)
    # the nodes run DVC experiments for missing evidence only when asked to
    runner = ExperimentRunner(Path("."), params_file=str(params_path)) if measure_missing else None
    try:
        context = AgentContext.load(
            Path("."),
            params_path=params_path,
            manifest_path=manifest_path,
            traffic=traffic,
            deployments=deployment,
            experiments=runner,
        )
    except (ParamsError, KeyError, OSError) as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    known = {spec.name: spec for spec in registered_nodes()}
    unknown = [name for name in node if name not in known]
    if unknown:
        console.print(f"[red]unknown node(s) {unknown}; the nodes are {list(known)}[/red]")
        raise typer.Exit(2)
    measurer: ServedShapeMeasurer | ExperimentMeasurer | None = None
    if runner is not None:
        measurer = ServedShapeMeasurer(context.params, Path(".")) if measure_in_process else ExperimentMeasurer(runner)
    context.batch_measurer = measurer
    try:
        outcomes = run_nodes(context, [known[name] for name in node] if node else None)
    finally:
        if measurer is not None:
            measurer.close()
    proposal, report = propose(context, outcomes, stack=stack, stacks_dir=stacks_dir, plan=not no_plan)
    for outcome in report:
        _print_outcome(outcome)
    if proposal is None:
        console.print("no proposal: nothing passed every guardrail (see above)")
        return
    out.mkdir(parents=True, exist_ok=True)
    name = proposal.branch.replace("/", "-")
    body_path = out / f"{name}.md"
    body_path.write_text(proposal.body)
    (out / f"{name}.json").write_text(proposal.model_dump_json(indent=2) + "\n")
    console.print(f"\n[bold]{proposal.title}[/bold]  (branch {proposal.branch}, proposal {proposal.id})")
    console.print(proposal.diff, markup=False, highlight=False)
    console.print(f"PR body: {body_path}")
    if not open_pr:
        console.print("dry run: nothing committed or pushed (--open-pr to open the pull request)")
        return
    _open_pr(proposal, body_path, remote=remote, base=base, repo_slug=repo_slug)


def _open_pr(proposal: object, body_path: Path, *, remote: str, base: str | None, repo_slug: str | None) -> None:
    from agent.git_ops import GitError, current_branch, github_slug, remote_url
    from agent.github import GitHubClient, GitHubError, token_from_env
    from agent.publish import PublishError, publish

    root = Path(".")
    try:
        base = base or current_branch(root)
        if base is None:
            console.print("[red]HEAD is detached: give --base[/red]")
            raise typer.Exit(2)
        token = token_from_env()
        github = None
        if token:
            slug = repo_slug or github_slug(remote_url(root, remote))
            if slug is None:
                console.print(
                    f"[red]cannot tell the GitHub repository from remote {remote!r}: give --repo owner/name[/red]"
                )
                raise typer.Exit(2)
            github = GitHubClient(slug, token)
        result = publish(proposal, repo=root, remote=remote, base=base, body_path=body_path, github=github)  # type: ignore[arg-type]
    except (GitError, PublishError, GitHubError) as error:
        console.print(f"[red]{type(error).__name__}: {error}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    for message in result.messages:
        console.print(message, soft_wrap=True)


@app.command("review")
def review_command(
    base: str = typer.Option(..., help="git ref of the PR's base (e.g. origin/main)"),
    stack: str = typer.Option("prod", help="stack to plan"),
    out: Path = typer.Option(Path("plan/agent/review.md"), help="where the markdown report is written"),
    comment: bool = typer.Option(False, help="post or update the sticky comment on --pr"),
    pr: int | None = typer.Option(None, help="pull request number (with --comment)"),
    repo_slug: str | None = typer.Option(None, "--repo", envvar="GITHUB_REPOSITORY", help="owner/name on GitHub"),
) -> None:
    """`dvc metrics diff` against the base and the infra plan diff of params.yaml, as one PR comment."""
    from agent.github import GitHubClient, GitHubError, token_from_env
    from agent.review import REVIEW_MARKER, review_report

    report = review_report(Path("."), base, stack=stack)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    console.print(report, markup=False, highlight=False)
    if not comment:
        return
    token = token_from_env()
    if pr is None or not repo_slug or not token:
        console.print("[red]--comment needs --pr, --repo (or GITHUB_REPOSITORY) and GITHUB_TOKEN[/red]")
        raise typer.Exit(2)
    try:
        posted = GitHubClient(repo_slug, token).upsert_comment(pr, report, REVIEW_MARKER)
    except GitHubError as error:
        console.print(f"[red]{type(error).__name__}: {error}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"comment {posted.get('html_url', posted.get('id'))}")


@app.command("simulate")
def simulate_command(
    deployment: str = typer.Option(..., help="params deployment (batching, engine, variant)"),
    rps: float = typer.Option(..., help="total request rate"),
    mix: list[str] = typer.Option([], help="class=share (repeatable); default: the deployment's classes equally"),
    replicas: int = typer.Option(1, help="pods behind the Service"),
    seconds: float = typer.Option(60.0, help="simulated seconds"),
    seed: int = typer.Option(0),
    params_path: Path = typer.Option(Path("params.yaml"), "--params"),
    manifest_path: Path = typer.Option(Path("artifacts/manifest.json"), "--manifest"),
) -> None:
    """Simulate a deployment at a load: p50/p99 per class, failures, queue and utilisation."""
    import random

    from agent.capacity import CurveError, deployment_service_curve
    from agent.simulator import GatewayModel, batching_spec, class_specs, poisson_arrivals, simulate
    from infopt.deployments import DeploymentError, resolve_deployment
    from infopt.manifest import ManifestError, load_manifest
    from infopt.params import ParamsError, load_params

    try:
        params = load_params(params_path)
        resolved = resolve_deployment(params, load_manifest(manifest_path), deployment)
        curve = deployment_service_curve(resolved, manifest_path=str(manifest_path))
    except (ParamsError, ManifestError, DeploymentError, CurveError) as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    shares = {item.split("=")[0]: float(item.split("=")[1]) for item in mix} or {
        tenant.sla_class: 1.0 for tenant in resolved.tenants
    }
    total = sum(shares.values())
    model = GatewayModel(
        classes=class_specs(params.sla_classes),
        batching=batching_spec(resolved.batching),
        curve=curve,
        queue_capacity=params.serving.queue_capacity,
        engine_replicas=params.serving.engine_replicas,
    )
    arrivals = poisson_arrivals([{k: rps * v / total for k, v in shares.items()}], seconds, random.Random(seed))
    result = simulate(model, arrivals, pods=replicas, seed=seed, warmup_s=min(2.0, seconds / 10))
    rows = {
        name: {
            "arrived": c.arrived,
            "served": c.served,
            "expired": c.expired,
            "rejected": c.rejected,
            "p50_ms": c.percentile_ms(50),
            "p99_ms": c.percentile_ms(99),
            "effective_p99_ms": c.effective_p99_ms(),
        }
        for name, c in result.classes.items()
        if c.arrived
    }
    typer.echo(
        json.dumps(
            {
                "deployment": deployment,
                "rps": rps,
                "replicas": replicas,
                "classes": rows,
                "mean_queue_per_pod": round(result.mean_queue_per_pod, 3),
                "utilization": round(result.utilization, 3),
                "mean_batch_size": round(result.mean_batch_size, 2),
                "service_curve": curve.source,
            },
            indent=2,
        )
    )
