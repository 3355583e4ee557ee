"""Serving-framework comparison (spec section 9): one model, one workload, five ways of serving it.

The model is the pipeline's LLM baseline (an HF Llama folder). The workload: `requests` completions with a
fixed prompt length (distinct held-out prompts, given as token ids so every server sees exactly
`prompt_tokens`) and exactly `output_tokens` greedy tokens each (ignore_eos / min_new_tokens), `concurrency`
in flight (100 = the spec's 100 concurrent requests), streamed where the server streams. Rows:

- vllm-gateway: vLLM CPU behind the infopt gateway (auth, token buckets, QoS priority, metrics);
- vllm-direct: the same vLLM server, called directly;
- transformers-naive: `generate` behind a minimal server, one request at a time (harness/llm_servers.py);
- onnxruntime: optimum's ORTModelForCausalLM of a `text-generation-with-past` export, same minimal server;
- torchserve: TorchServe 0.12 with a `generate` handler (archived upstream: a comparison row only; no
  streaming, so no TTFT).

Per row: end-to-end p50/p95/p99, TTFT and TPOT where streamed, output tokens/s, requests/s, peak RSS and CPU
time of the server's process tree (harness/process_monitor.py), and cost per 1k requests from
infopt.cost.cost_per_1k at params' cpu rate. Beside the rows, the gateway's added TTFT: requests one at a
time, alternating direct and through the gateway, median of the paired differences. Everything is logged to
MLflow and written as JSON + markdown naming the machine (fingerprint, load average at the start).

    infopt llm compare                       # the full run (100 concurrent requests)
    infopt llm compare --requests 6 --concurrency 3 --output-tokens 4 --out-dir /tmp/x   # a reduced run
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from harness.child_server import ChildServerError, free_port, stop, wait_ready
from harness.llm_client import RequestResult, closed_loop, send, summarize
from harness.process_monitor import ProcessMonitor
from harness.vllm_process import DEFAULT_VENV, VllmProcess, VllmProcessError, VllmServerSettings
from infopt.cost import cost_per_1k
from infopt.fingerprint import collect
from infopt.params import Deployment, Params

FRAMEWORKS = ("vllm-gateway", "vllm-direct", "transformers-naive", "onnxruntime", "torchserve")
DESCRIPTIONS = {
    "vllm-gateway": "vLLM CPU (OpenAI server) behind the infopt gateway",
    "vllm-direct": "vLLM CPU (OpenAI server), called directly",
    "transformers-naive": "transformers generate behind a minimal server, one request at a time",
    "onnxruntime": "optimum ORTModelForCausalLM (text-generation-with-past export), minimal server, one at a time",
    "torchserve": "TorchServe 0.12, generate handler, 1 worker (archived upstream: comparison row only)",
}
RESULTS_DIR = Path("benchmarks/results")
SERVED_NAME = "comparison-llm"
DEPLOYMENT = "llm-comparison"
TENANT_KEY = "acme-demo-key"  # params.yaml's demo key of the premium tenant
MEMORY_NOTE = (
    "peak_memory_mb: RSS summed over the server's process tree, sampled every 0.1 s (shared pages counted per process)"
)
ROW_FIELDS = (
    "framework",
    "description",
    "status",
    "reason",
    "requests",
    "ok",
    "failed",
    "e2e_p50_ms",
    "e2e_p95_ms",
    "e2e_p99_ms",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "tpot_p50_ms",
    "output_tokens_per_s",
    "request_throughput_rps",
    "peak_memory_mb",
    "cpu_seconds",
    "cpu_cores_mean",
    "cost_per_1k_requests_usd",
    "startup_s",
)


@dataclass(frozen=True)
class Workload:
    requests: int = 100
    concurrency: int = 100
    prompt_tokens: int = 64
    output_tokens: int = 32
    warmup_requests: int = 2
    overhead_pairs: int = 30  # gateway TTFT overhead: sequential (direct, gateway) pairs


@dataclass(frozen=True)
class ComparisonSettings:
    model_dir: Path
    params_path: Path
    workload: Workload = Workload()
    frameworks: tuple[str, ...] = FRAMEWORKS
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)  # naive/ORT/TorchServe intra-op threads
    startup_timeout_s: float = 300.0
    request_timeout_s: float = 900.0
    prompt_texts: tuple[str, ...] = ()  # held-out documents for the prompts; empty: the tokenizer's own text


class ComparisonError(RuntimeError):
    """The comparison cannot start (no model folder, unknown framework); the message names it."""


def _row(framework: str, status: str, reason: str | None = None, **values: Any) -> dict[str, Any]:
    row = dict.fromkeys(ROW_FIELDS)
    row.update(framework=framework, description=DESCRIPTIONS[framework], status=status, reason=reason)
    row.update(values)
    return row


def make_prompts(model_dir: Path, texts: Sequence[str], count: int, length: int) -> list[list[int]]:
    """`count` distinct prompts of exactly `length` token ids (BOS + text tokens) cut from `texts`."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    stream: list[int] = []
    source = list(texts) or [tokenizer.decode(list(range(min(len(tokenizer), 4000))))]
    for ids in tokenizer(source, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        if len(stream) >= count * length:
            break
    if len(stream) < length:
        raise ComparisonError(f"prompt text has {len(stream)} tokens; one prompt needs {length}")
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    body = length - len(bos)
    return [bos + [stream[(i * body + j) % len(stream)] for j in range(body)] for i in range(count)]


def completion_bodies(
    prompts: Sequence[list[int]], output_tokens: int, *, model: str | None, stream: bool
) -> list[dict]:
    bodies = []
    for prompt in prompts:
        body: dict[str, Any] = {"prompt": prompt, "max_tokens": output_tokens, "temperature": 0, "stream": stream}
        body["ignore_eos"] = True  # vLLM: exactly max_tokens; the naive servers always generate exactly that
        if model is not None:
            body["model"] = model
        if stream:
            body["stream_options"] = {"include_usage": True}
        bodies.append(body)
    return bodies


def measured_row(
    framework: str,
    results: Sequence[RequestResult],
    wall_s: float,
    monitor: ProcessMonitor,
    hourly_usd: float,
    startup_s: float | None,
) -> dict[str, Any]:
    summary = summarize(results, wall_s)
    rps = summary["request_throughput_rps"] or 0.0
    status = "ok" if summary["failed"] == 0 else "failed"
    return _row(
        framework,
        status,
        None if status == "ok" else f"{summary['failed']} requests failed: {summary['errors']}",
        requests=summary["requests"],
        ok=summary["ok"],
        failed=summary["failed"],
        e2e_p50_ms=summary["e2e_ms"]["p50"],
        e2e_p95_ms=summary["e2e_ms"]["p95"],
        e2e_p99_ms=summary["e2e_ms"]["p99"],
        ttft_p50_ms=summary["ttft_ms"]["p50"],
        ttft_p99_ms=summary["ttft_ms"]["p99"],
        tpot_p50_ms=summary["tpot_ms"]["p50"],
        output_tokens_per_s=summary["output_tokens_per_s"],
        request_throughput_rps=summary["request_throughput_rps"],
        peak_memory_mb=round(monitor.peak_rss_mb, 1),
        cpu_seconds=round(monitor.cpu_seconds, 2),
        cpu_cores_mean=round(monitor.cpu_cores_mean, 3),
        cost_per_1k_requests_usd=cost_per_1k(hourly_usd, rps) if rps > 0 else None,
        startup_s=None if startup_s is None else round(startup_s, 2),
    )


def _workload(
    url: str, bodies: list[dict], settings: ComparisonSettings, pids: list[int], headers: dict[str, str] | None = None
) -> tuple[list[RequestResult], float, ProcessMonitor]:
    work = settings.workload
    warm = bodies[: work.warmup_requests]
    if warm:
        asyncio.run(
            closed_loop(url, warm, concurrency=len(warm), timeout_s=settings.request_timeout_s, headers=headers)
        )
    with ProcessMonitor(pids) as monitor:
        results, wall = asyncio.run(
            closed_loop(
                url, bodies, concurrency=work.concurrency, timeout_s=settings.request_timeout_s, headers=headers
            )
        )
    return results, wall, monitor


# ----------------------------------------------------------------------------- vLLM (+ gateway)
def _gateway_params(params: Params, variant: str, folder: Path) -> Path:
    """params.yaml for the gateway: a vllm deployment of `variant` for the premium tenant (acme)."""
    from ruamel.yaml import YAML

    tenant = min(params.tenants, key=lambda t: params.sla_classes[t.sla_class].priority)
    deployment = Deployment(name=DEPLOYMENT, variant=variant, engine="vllm", tenants=[tenant.name])
    updated = params.model_copy(update={"deployments": [deployment]})
    path = folder / "params.yaml"
    YAML(typ="safe").dump(updated.model_dump(mode="json"), path)
    return path


def _start_gateway(params_file: Path, vllm_url: str, folder: Path, timeout_s: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        sys.executable, "-c", "from cli.main import main; main()", "serve", "--params", str(params_file), "--deployment", DEPLOYMENT,
        "--vllm-url", vllm_url, "--vllm-model", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning",
    ]  # fmt: skip
    log_path = folder / "gateway.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, cwd=folder, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_ready(process, f"{url}/v2/health/ready", timeout_s=timeout_s, log_path=log_path)
    return process, url


def gateway_ttft_overhead(
    direct_url: str, gateway_url: str, prompts: Sequence[list[int]], pairs: int
) -> dict[str, Any]:
    """Sequential pairs, alternating which goes first: the gateway's added TTFT without queueing noise."""
    headers = {"Authorization": f"Bearer {TENANT_KEY}"}

    async def measure() -> tuple[list[float], list[float]]:
        direct, gateway = [], []
        async with httpx.AsyncClient(timeout=120.0) as client:
            for index in range(pairs):
                body = completion_bodies([prompts[index % len(prompts)]], 4, model=SERVED_NAME, stream=True)[0]
                order = [("direct", direct_url, None), ("gateway", gateway_url, headers)]
                for name, url, extra in order if index % 2 == 0 else order[::-1]:
                    result = await send(client, f"{url}/v1/completions", body, headers=extra)
                    if result.ok and result.ttft_s is not None:
                        (direct if name == "direct" else gateway).append(result.ttft_s * 1000)
        return direct, gateway

    direct, gateway = asyncio.run(measure())
    paired = [g - d for d, g in zip(direct, gateway, strict=False)]
    return {
        "pairs": len(paired),
        "direct_ttft_p50_ms": round(statistics.median(direct), 3) if direct else None,
        "gateway_ttft_p50_ms": round(statistics.median(gateway), 3) if gateway else None,
        "added_ttft_p50_ms": round(statistics.median(paired), 3) if paired else None,
        "method": "sequential requests (4 output tokens), alternating direct/gateway order; median of paired differences",
    }


def run_vllm(
    settings: ComparisonSettings, params: Params, prompts: list[list[int]], hourly: float, wanted: set[str]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    if not (DEFAULT_VENV / "bin" / "python").is_file():
        reason = f"{DEFAULT_VENV} is not installed (scripts/setup_vllm.sh)"
        return [_row(name, "not run", reason) for name in ("vllm-gateway", "vllm-direct") if name in wanted], None
    rows: list[dict[str, Any]] = []
    overhead = None
    work = settings.workload
    vllm_settings = VllmServerSettings(
        model=settings.model_dir,
        served_model_name=SERVED_NAME,
        startup_timeout_s=settings.startup_timeout_s,
        max_model_len=max(512, work.prompt_tokens + work.output_tokens + 8),
    )
    try:
        server = VllmProcess(vllm_settings).start()
    except VllmProcessError as error:
        reason = f"vLLM did not start: {str(error)[-400:]}"
        return [_row(name, "failed", reason) for name in ("vllm-gateway", "vllm-direct") if name in wanted], None
    try:
        assert server.pid is not None
        if "vllm-direct" in wanted:
            bodies = completion_bodies(prompts, work.output_tokens, model=SERVED_NAME, stream=True)
            results, wall, monitor = _workload(f"{server.base_url}/v1/completions", bodies, settings, [server.pid])
            rows.append(measured_row("vllm-direct", results, wall, monitor, hourly, server.startup_s))
        if "vllm-gateway" in wanted:
            with tempfile.TemporaryDirectory(prefix="infopt-compare-gw-") as folder:
                params_file = _gateway_params(
                    params, params.llm.baseline.name if params.llm else SERVED_NAME, Path(folder)
                )
                began = time.perf_counter()
                try:
                    gateway, url = _start_gateway(
                        params_file, server.base_url, Path(folder), settings.startup_timeout_s
                    )
                except ChildServerError as error:
                    rows.append(_row("vllm-gateway", "failed", f"gateway did not start: {str(error)[-400:]}"))
                else:
                    try:
                        started_s = time.perf_counter() - began + (server.startup_s or 0.0)
                        bodies = completion_bodies(prompts, work.output_tokens, model=DEPLOYMENT, stream=True)
                        headers = {"Authorization": f"Bearer {TENANT_KEY}"}
                        results, wall, monitor = _workload(
                            f"{url}/v1/completions", bodies, settings, [server.pid, gateway.pid], headers
                        )
                        rows.append(measured_row("vllm-gateway", results, wall, monitor, hourly, started_s))
                        if work.overhead_pairs:
                            overhead = gateway_ttft_overhead(server.base_url, url, prompts, work.overhead_pairs)
                    finally:
                        stop(gateway, timeout_s=20)
    finally:
        server.stop()
    return rows, overhead


# ----------------------------------------------------------------------------- naive servers
def export_onnx(model_dir: Path, out: Path) -> Path:
    """optimum's causal-LM export with the KV cache (text-generation-with-past), tokenizer copied beside it."""
    from optimum.exporters.onnx import main_export

    main_export(str(model_dir), output=str(out), task="text-generation-with-past", no_post_process=True)
    return out


def run_minimal_server(
    framework: str, engine: str, model_dir: Path, settings: ComparisonSettings, prompts: list[list[int]], hourly: float
) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix=f"infopt-compare-{engine}-") as folder:
        log_path = Path(folder) / "server.log"
        command = [
            sys.executable, "-m", "harness.llm_servers", "--engine", engine, "--model", str(model_dir),
            "--port", str(port), "--threads", str(settings.threads),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        began = time.perf_counter()
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            try:
                wait_ready(process, f"{url}/health", timeout_s=settings.startup_timeout_s, log_path=log_path)
            except ChildServerError as error:
                return _row(framework, "failed", f"server did not start: {str(error)[-300:]}")
            startup = time.perf_counter() - began
            bodies = completion_bodies(prompts, settings.workload.output_tokens, model=None, stream=True)
            results, wall, monitor = _workload(f"{url}/v1/completions", bodies, settings, [process.pid])
            return measured_row(framework, results, wall, monitor, hourly, startup)
        finally:
            stop(process, timeout_s=20)


# ----------------------------------------------------------------------------- TorchServe
def run_torchserve(settings: ComparisonSettings, prompts: list[list[int]], hourly: float) -> dict[str, Any]:
    torchserve = shutil.which("torchserve", path=str(Path(sys.executable).parent))
    archiver = shutil.which("torch-model-archiver", path=str(Path(sys.executable).parent))
    if torchserve is None or archiver is None:
        return _row("torchserve", "not run", "torchserve / torch-model-archiver are not installed (pip extra: dev)")
    if shutil.which("java") is None:
        return _row("torchserve", "not run", "TorchServe's frontend needs Java (17) and none is on PATH")
    handler = Path(__file__).resolve().parents[1] / "harness" / "torchserve_llm_handler.py"
    with tempfile.TemporaryDirectory(prefix="infopt-compare-ts-") as folder:
        root = Path(folder)
        store = root / "store"
        store.mkdir()
        files = ",".join(str(path) for path in sorted(settings.model_dir.iterdir()) if path.is_file())
        (root / "model-config.yaml").write_text(f"threads: {settings.threads}\nresponseTimeout: 900\n")
        archive = subprocess.run(
            [
                archiver,
                "--model-name",
                "llm",
                "--version",
                "1.0",
                "--handler",
                str(handler),
                "--extra-files",
                files,
                "--config-file",
                str(root / "model-config.yaml"),
                "--export-path",
                str(store),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if archive.returncode != 0:
            return _row("torchserve", "failed", f"torch-model-archiver: {archive.stderr[-300:]}")
        port, management, metrics = free_port(), free_port(), free_port()
        (root / "config.properties").write_text(
            f"inference_address=http://127.0.0.1:{port}\nmanagement_address=http://127.0.0.1:{management}\n"
            f"metrics_address=http://127.0.0.1:{metrics}\ndefault_workers_per_model=1\n"
            "disable_token_authorization=true\nenable_model_api=false\ninstall_py_dep_per_model=false\n"
            f"default_response_timeout=900\nmodel_store={store}\nload_models=llm.mar\n"
        )
        log_path = root / "torchserve.log"
        env = {**os.environ, "LOG_LOCATION": str(root / "logs"), "METRICS_LOCATION": str(root / "logs")}
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
        began = time.perf_counter()
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    torchserve,
                    "--start",
                    "--foreground",
                    "--ncs",
                    "--ts-config",
                    str(root / "config.properties"),
                    "--model-store",
                    str(store),
                    "--disable-token-auth",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=root,
                env=env,
                start_new_session=True,
            )
        try:
            url = f"http://127.0.0.1:{port}"
            try:
                wait_ready(
                    process, f"{url}/ping", timeout_s=settings.startup_timeout_s, log_path=log_path,
                    is_ready=lambda response: response.status_code == 200 and "Healthy" in response.text,
                )  # fmt: skip
                # /ping is healthy before the worker loaded the model: wait for one real answer
                probe = completion_bodies(prompts[:1], 1, model=None, stream=False)[0]
                deadline = time.monotonic() + settings.startup_timeout_s
                while httpx.post(f"{url}/predictions/llm", json=probe, timeout=120).status_code != 200:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise ChildServerError(f"TorchServe never answered a prediction{log_path.read_text()[-300:]}")
                    time.sleep(1.0)
            except (ChildServerError, httpx.HTTPError) as error:
                return _row("torchserve", "failed", f"TorchServe did not serve: {str(error)[-300:]}")
            startup = time.perf_counter() - began
            bodies = completion_bodies(prompts, settings.workload.output_tokens, model=None, stream=False)
            results, wall, monitor = _workload(f"{url}/predictions/llm", bodies, settings, [process.pid])
            return measured_row("torchserve", results, wall, monitor, hourly, startup)
        finally:
            _stop_group(process)


def _stop_group(process: subprocess.Popen) -> None:
    import signal

    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


# ----------------------------------------------------------------------------- the run
def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def run_comparison(settings: ComparisonSettings, params: Params, log: Callable[[str], None] = print) -> dict[str, Any]:
    unknown = sorted(set(settings.frameworks) - set(FRAMEWORKS))
    if unknown:
        raise ComparisonError(f"unknown frameworks {unknown}; known: {list(FRAMEWORKS)}")
    if not (settings.model_dir / "config.json").is_file():
        raise ComparisonError(
            f"{settings.model_dir} is not a Hugging Face model folder (no config.json); run dvc repro"
        )
    work = settings.workload
    hourly = params.cost.hourly_usd["cpu"]
    started_load = load_average()
    prompts = make_prompts(settings.model_dir, settings.prompt_texts, work.requests, work.prompt_tokens)
    wanted = set(settings.frameworks)
    rows: list[dict[str, Any]] = []
    overhead = None
    if wanted & {"vllm-gateway", "vllm-direct"}:
        log("vLLM (direct and through the gateway)")
        vllm_rows, overhead = run_vllm(settings, params, prompts, hourly, wanted)
        rows.extend(vllm_rows)
    if "transformers-naive" in wanted:
        log("transformers generate, naive server")
        rows.append(
            run_minimal_server("transformers-naive", "transformers", settings.model_dir, settings, prompts, hourly)
        )
    if "onnxruntime" in wanted:
        log("ONNX Runtime (optimum export)")
        with tempfile.TemporaryDirectory(prefix="infopt-compare-onnx-") as folder:
            try:
                onnx_dir = export_onnx(settings.model_dir, Path(folder) / "onnx")
            except Exception as error:  # optimum raises many exporter error types; all mean "no ONNX row"
                rows.append(
                    _row("onnxruntime", "failed", f"optimum export failed: {type(error).__name__}: {error}"[:300])
                )
            else:
                rows.append(run_minimal_server("onnxruntime", "onnxruntime", onnx_dir, settings, prompts, hourly))
    if "torchserve" in wanted:
        log("TorchServe")
        rows.append(run_torchserve(settings, prompts, hourly))
    order = {name: index for index, name in enumerate(FRAMEWORKS)}
    rows.sort(key=lambda row: order[row["framework"]])
    return {
        "benchmark": "framework_comparison",
        "model": str(settings.model_dir),
        "workload": asdict(work),
        "threads": settings.threads,
        "cost_rate_usd_per_hour": hourly,
        "memory_note": MEMORY_NOTE,
        "load_average_at_start": started_load,
        "load_average_at_end": load_average(),
        "fingerprint": collect("cpu").model_dump(),
        "rows": rows,
        "gateway_ttft_overhead": overhead,
        "goals": goals(rows, overhead),
    }


def goals(rows: Sequence[dict[str, Any]], overhead: dict[str, Any] | None) -> dict[str, Any]:
    by_name = {row["framework"]: row for row in rows}
    gateway = (by_name.get("vllm-gateway") or {}).get("output_tokens_per_s")
    naive = (by_name.get("transformers-naive") or {}).get("output_tokens_per_s")
    ratio = round(gateway / naive, 2) if gateway and naive else None
    added = (overhead or {}).get("added_ttft_p50_ms")
    return {
        "gateway_vs_naive_output_tokens_ratio": ratio,
        "gateway_vs_naive_goal": 10.0,
        "gateway_vs_naive_met": None if ratio is None else ratio >= 10.0,
        "gateway_added_ttft_p50_ms": added,
        "gateway_added_ttft_goal_ms": 2.0,
        "gateway_added_ttft_met": None if added is None else added <= 2.0,
    }


def _cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) < 0.01:
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    fp = report["fingerprint"]
    work = report["workload"]
    lines = [
        "| framework | status | p50 (ms) | p99 (ms) | TTFT p50 (ms) | TPOT p50 (ms) | output tok/s | req/s | peak MB | CPU s | USD / 1k req |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        status = row["status"] if row["status"] == "ok" else f"{row['status']}: {row['reason']}"
        lines.append(
            "| "
            + " | ".join(
                [
                    row["framework"],
                    status.replace("|", "/"),
                    _cell(row["e2e_p50_ms"]),
                    _cell(row["e2e_p99_ms"]),
                    _cell(row["ttft_p50_ms"]),
                    _cell(row["tpot_p50_ms"], 2),
                    _cell(row["output_tokens_per_s"]),
                    _cell(row["request_throughput_rps"], 2),
                    _cell(row["peak_memory_mb"], 0),
                    _cell(row["cpu_seconds"]),
                    "-" if row["cost_per_1k_requests_usd"] is None else f"{row['cost_per_1k_requests_usd']:.3g}",
                ]
            )
            + " |"
        )
    goal = report["goals"]
    header = (
        f"Framework comparison ({fp['cpu_model']}, {fp['cpu_count']} cores, git {fp['git_sha'][:10]}, "
        f"{fp['timestamp'][:10]}; load average at start {report['load_average_at_start']}): "
        f"{work['requests']} requests, {work['concurrency']} concurrent, {work['prompt_tokens']} prompt + "
        f"{work['output_tokens']} output tokens each, greedy; cost at {report['cost_rate_usd_per_hour']} USD/h."
    )
    footer = (
        f"Goals: vLLM through the gateway / naive output tokens/s = {_cell(goal['gateway_vs_naive_output_tokens_ratio'], 2)} "
        f"(goal >= 10: {'met' if goal['gateway_vs_naive_met'] else 'not met' if goal['gateway_vs_naive_met'] is False else 'not measured'}); "
        f"gateway's added TTFT p50 = {_cell(goal['gateway_added_ttft_p50_ms'], 2)} ms "
        f"(goal <= 2 ms: {'met' if goal['gateway_added_ttft_met'] else 'not met' if goal['gateway_added_ttft_met'] is False else 'not measured'})."
    )
    return "\n".join([header, "", *lines, "", footer, "", report["memory_note"] + "."]) + "\n"


def write_results(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "framework_comparison.json", out_dir / "framework_comparison.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path


def log_mlflow(params: Params, report: dict[str, Any]) -> str | None:
    """One run `framework-comparison`: per framework p99, throughput, memory, CPU and cost; files attached."""
    from infopt.tracking import keyed_run, log_fingerprint, tracking_enabled

    if not tracking_enabled():
        return None
    import mlflow

    metrics: dict[str, float] = {}
    for row in report["rows"]:
        prefix = row["framework"].replace("-", "_")
        for key in (
            "e2e_p99_ms",
            "ttft_p50_ms",
            "output_tokens_per_s",
            "request_throughput_rps",
            "peak_memory_mb",
            "cpu_seconds",
            "cost_per_1k_requests_usd",
        ):
            if isinstance(row.get(key), int | float):
                metrics[f"{prefix}_{key}"] = float(row[key])
    for key, value in report["goals"].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics[f"goal_{key}"] = float(value)
    with keyed_run(params, "framework-comparison", "compare", tags={"infopt.model_kind": "causal-lm"}) as run:
        mlflow.log_metrics(metrics)
        mlflow.log_params({f"workload_{k}": str(v) for k, v in report["workload"].items()})
        log_fingerprint(report["fingerprint"])
        mlflow.log_dict(report, "framework_comparison.json")
        mlflow.log_text(markdown(report), "framework_comparison.md")
        return run.info.run_id
