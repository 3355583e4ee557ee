"""`infopt llm ...`: the causal-LM path's commands (the serving-framework comparison)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command("compare")
def compare(
    params: Path = typer.Option(Path("params.yaml"), help="params file (cost rate, tenants, the llm section)"),
    model_dir: Path | None = typer.Option(
        None, help="HF model folder; default: the llm baseline variant built by dvc repro"
    ),
    requests: int = typer.Option(100, help="requests per framework"),
    concurrency: int = typer.Option(100, help="requests in flight at once"),
    prompt_tokens: int = typer.Option(64, help="fixed prompt length (token ids)"),
    output_tokens: int = typer.Option(32, help="fixed output length (greedy, EOS ignored)"),
    overhead_pairs: int = typer.Option(30, help="sequential direct/gateway pairs for the gateway's added TTFT"),
    framework: list[str] = typer.Option(
        [], help="run only these (repeatable): vllm-gateway, vllm-direct, transformers-naive, onnxruntime, torchserve"
    ),
    threads: int | None = typer.Option(
        None, help="intra-op threads of the naive, ONNX and TorchServe servers (default: all cores)"
    ),
    out_dir: Path = typer.Option(Path("benchmarks/results"), help="where framework_comparison.{json,md} go"),
    startup_timeout_s: float = typer.Option(300.0, help="bounded wait for each server to become ready"),
) -> None:
    """Serve one model on vLLM (gateway and direct), naive transformers, ONNX Runtime and TorchServe under the
    same workload; write the JSON + markdown table and log it to MLflow."""
    import os

    from benchmarks.framework_comparison import (
        FRAMEWORKS,
        ComparisonError,
        ComparisonSettings,
        Workload,
        log_mlflow,
        markdown,
        run_comparison,
        write_results,
    )
    from infopt.params import ParamsError, load_params
    from infopt.paths import LLM_DATA_DIR, LLM_VARIANTS_DIR

    try:
        loaded = load_params(params)
    except ParamsError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    if model_dir is None:
        if loaded.llm is None:
            console.print("[red]params has no llm section: give --model-dir[/red]")
            raise typer.Exit(2)
        model_dir = LLM_VARIANTS_DIR / loaded.llm.baseline.name / "hf"
    test = LLM_DATA_DIR / "test.jsonl"
    texts: tuple[str, ...] = ()
    if test.is_file():
        import json

        texts = tuple(json.loads(line)["text"] for line in test.read_text().splitlines()[:2000] if line.strip())
    settings = ComparisonSettings(
        model_dir=model_dir,
        params_path=params,
        workload=Workload(
            requests=requests,
            concurrency=concurrency,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            overhead_pairs=overhead_pairs,
        ),
        frameworks=tuple(framework) or FRAMEWORKS,
        threads=threads or os.cpu_count() or 1,
        startup_timeout_s=startup_timeout_s,
        prompt_texts=texts,
    )
    try:
        report = run_comparison(settings, loaded, log=lambda line: console.print(f"[bold]{line}[/]"))
    except ComparisonError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    json_path, md_path = write_results(report, out_dir)
    run_id = log_mlflow(loaded, report)
    console.print(markdown(report))
    console.print(f"wrote {json_path} and {md_path}" + (f"; MLflow run {run_id}" if run_id else ""))
