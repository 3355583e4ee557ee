"""Validate the agent's gateway simulator (agent/simulator.py) against real load tests of the real gateway.

One run, on this machine:
1. Build a BERT-family classifier (random weights, hidden 256 and 2 layers by default; a
   locally trained WordPiece tokenizer), export it to ONNX, and start the real gateway on it in its own
   process on 127.0.0.1 (serving.app, uvicorn + uvloop + httptools) with textcls-premium's batching from
   params.yaml (dynamic, max 8, wait 2 ms, preferred 4/8), one engine replica on one thread, the repo's
   SLA classes and three tenants (premium, standard, batch).
2. Calibrate, just before each load test (the machine is shared, so its speed drifts): (a) the engine's
   batch-time curve, batch 1..8, on batches built by the gateway's own codec from the texts the load generator sends (recorded as BatchPoints and read
   through the same adapter as the manifest's sweep); (b) the per-request overhead outside the engine (HTTP,
   JSON, tokenisation, client): closed-loop single requests through the gateway, minus the batch window and
   the median batch-1 engine time.
3. Load tests: open-loop Poisson at several total rates (a fixed mix of premium/standard/batch), each for
   `--duration` seconds, from the benchmark's own process (`harness.loadgen`; the gateway runs in another).
4. Predict each load's per-class p99 with the simulator (the calibrated curve and overhead, long simulated
   runs over several seeds) and compare with the measured p99.

The result file records the fingerprint, the load average before and after (the machine is shared), the
calibration, and measured vs predicted p99 per load and class, with the relative error against the 15%
goal.

    python -m benchmarks.simulator_validation --out benchmarks/results/simulator_validation.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from agent.capacity import ServiceCurve, curve_from_points
from agent.frontend import FrontEndCpu, host_model
from agent.simulator import GatewayModel, HostModel, batching_spec, class_specs, poisson_arrivals, simulate
from harness.child_server import free_port, stop, wait_ready
from harness.loadgen import LatencySummary, Stream, run_load
from infopt.manifest import BatchPoint
from infopt.params import load_params
from serving.timing import parse_gateway_ms

LABELS = ("computers", "science", "work")
VOCABULARY = [
    "kernel",
    "compiler",
    "network",
    "packet",
    "server",
    "disk",
    "memory",
    "thread",
    "process",
    "scheduler",
    "cache",
    "socket",
    "protocol",
    "atom",
    "molecule",
    "chemistry",
    "physics",
    "biology",
    "microscope",
    "laboratory",
    "experiment",
    "energy",
    "particle",
    "quantum",
    "manager",
    "meeting",
    "deadline",
    "report",
    "office",
    "budget",
    "project",
    "schedule",
    "team",
    "review",
    "contract",
    "client",
    "invoice",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "while",
    "under",
    "with",
    "over",
    "about",
    "where",
    "when",
    "because",
    "after",
    "before",
    "during",
]
MIX = {"premium": 0.5, "standard": 0.3, "batch": 0.2}  # share of the total rate per SLA class
KEYS = {"premium": "premium-validation-key", "standard": "standard-validation-key", "batch": "batch-validation-key"}
GOAL = 0.15  # predicted p99 within 15% of measured
WARMUP_S = 2.0  # measured and simulated alike: the first seconds' latencies are left out (pools still growing)
OVERHEAD_WARMUP = 20  # single requests sent before the timed ones
# The load generator is one Python event loop: past this share of a core it falls behind its own schedule and
# its latencies measure its backlog, not the gateway; such a load is recorded and not judged.
CLIENT_SATURATED_CORES = 0.8
MAX_SEND_LAG_P99_MS = 5.0  # the generator kept its Poisson schedule: 99% of requests left within 5 ms of it
MAX_OVERRUN = 0.02  # and the load ended within 2% of its duration


def texts(count: int = 64, seed: int = 0) -> tuple[str, ...]:
    """Deterministic texts of 30-60 words (about 40-64 tokens after WordPiece)."""
    rng = random.Random(seed)
    return tuple(" ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(30, 60))) for _ in range(count))


def build_model(folder: Path, *, hidden: int, layers: int, heads: int, max_len: int) -> Path:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(
        list(texts()), trainer=trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials)
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))],
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    ).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=max_len,
        num_labels=len(LABELS),
        attn_implementation="eager",  # fused Attention nodes in ORT (docs: SDPA exports run 2-3x slower)
    )
    model = BertForSequenceClassification(config).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    sample = torch.ones((2, 8), dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings
        torch.onnx.export(
            Logits(),
            (sample, sample),
            str(folder / "model.onnx"),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}, "logits": {0: "b"}},
        )
    return folder


# ----------------------------------------------------------------------------- the gateway (child process)
def gateway_settings(args: argparse.Namespace) -> Any:
    from infopt.params import ServingParams, Tenant
    from serving.settings import GatewaySettings

    params = load_params(args.params)
    batching = params.deployment(args.deployment).batching or params.serving.batching
    tenants = tuple(
        Tenant(
            name=f"{sla_class}-tenant",
            sla_class=sla_class,
            rate_per_s=100_000,  # the token buckets must not shape the load under test
            burst=100_000,
            cost_center="cc-validation",
            api_key_sha256=[hashlib.sha256(key.encode()).hexdigest()],
        )
        for sla_class, key in KEYS.items()
    )
    return GatewaySettings(
        model_name="validation",
        variant="validation",
        engine="onnxruntime",
        labels=LABELS,
        max_seq_len=args.max_len,
        sla_classes=dict(params.sla_classes),
        tenants=tenants,
        batching=batching,
        serving=ServingParams(queue_capacity=params.serving.queue_capacity, engine_replicas=1),
        model_dir=args.model_dir,
        tokenizer_dir=args.model_dir,
        engine_threads=args.threads,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
    )


def serve(args: argparse.Namespace) -> None:
    from serving.app import create_app
    from serving.server import run_server

    if args.gateway_core is not None:  # first: every thread the gateway starts (engine, executor) inherits it
        os.sched_setaffinity(0, {args.gateway_core})
    settings = gateway_settings(args)
    run_server(create_app(settings), host="127.0.0.1", port=args.port, log_level="warning")


def start_gateway(
    args: argparse.Namespace, model_dir: Path, port: int, gateway_core: int | None = None
) -> subprocess.Popen[bytes]:
    """The gateway under test in its own process (`serve`); `gateway_core`: pinned to that core."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.simulator_validation",
        "serve",
        "--model-dir",
        str(model_dir),
        "--port",
        str(port),
        "--params",
        str(args.params),
        "--deployment",
        args.deployment,
        "--threads",
        str(args.threads),
        "--max-len",
        str(args.max_len),
        *([] if gateway_core is None else ["--gateway-core", str(gateway_core)]),
    ]
    return subprocess.Popen(command, env=dict(os.environ))


@contextlib.contextmanager
def on_cores(cores: set[int] | None) -> Iterator[None]:
    """This thread (and the threads it starts) on `cores` meanwhile; None: where it was."""
    if cores is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@dataclass(frozen=True)
class Pinning:
    """--gateway-core: the gateway (and the engine calibrations) on that core, the load generator and the
    contention hog on the others: a 1-core pod whose client is elsewhere, as the agent models pods."""

    gateway: set[int]
    client: set[int]

    @classmethod
    def of(cls, core: int | None) -> Pinning | None:
        if core is None:
            return None
        mine = set(os.sched_getaffinity(0))
        if core not in mine or len(mine) < 2:
            raise SystemExit(
                f"--gateway-core {core}: needs that core and at least one other in this process's affinity {sorted(mine)}"
            )
        return cls(gateway={core}, client=mine - {core})


# ----------------------------------------------------------------------------- calibration
def served_engine(model_dir: Path, args: argparse.Namespace) -> tuple[Any, Any, list[Any]]:
    """The gateway's engine, its codec and the load's texts encoded by it: what the calibrations time."""
    from infopt.engines.factory import load_engine
    from serving.codec import Codec

    engine = load_engine("onnxruntime", model_dir, device="cpu", precision="fp32", threads=args.threads)
    codec = Codec(model_dir, args.max_len)
    rows, _truncated = codec.encode(list(texts()))
    return engine, codec, rows


def calibrate_engine(model_dir: Path, args: argparse.Namespace, max_batch: int) -> list[BatchPoint]:
    """Engine time per batch size on the gateway's own batch shapes (its codec, padded to the longest row)."""
    engine, codec, rows = served_engine(model_dir, args)
    rng = random.Random(1)
    points = []
    for batch in range(1, max_batch + 1):
        samples: list[float] = []
        widths: list[int] = []
        for _ in range(3):
            engine.infer(*codec.collate(rng.sample(rows, batch)))  # warm-up
        stop_at = time.perf_counter() + args.calibration_seconds
        while time.perf_counter() < stop_at or len(samples) < 50:
            ids, mask = codec.collate(rng.sample(rows, batch))
            began = time.perf_counter()
            engine.infer(ids, mask)
            samples.append(time.perf_counter() - began)
            widths.append(int(ids.shape[1]))
        ms = np.asarray(samples) * 1000.0
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        points.append(
            BatchPoint(
                batch_size=batch,
                throughput_rps=round(batch / (p50 / 1000.0), 1),
                throughput_rps_min=round(batch / (p50 / 1000.0), 1),
                throughput_rps_max=round(batch / (p50 / 1000.0), 1),
                latency_p50_ms=round(float(p50), 4),
                latency_p95_ms=round(float(p95), 4),
                latency_p99_ms=round(float(p99), 4),
                latency_p99_ms_min=round(float(p99), 4),
                latency_p99_ms_max=round(float(p99), 4),  # one round: its p99 is the worst round's
                mean_tokens=round(float(np.mean(widths)), 2),
                peak_memory_mb=0.0,
                cost_per_1k_usd=0.0,
                iterations=len(samples),
                rounds=1,
            )
        )
    engine.close()
    return points


def measure_contention(
    model_dir: Path, args: argparse.Namespace, pinning: Pinning | None = None, blocks: int = 4, block_s: float = 0.5
) -> float:
    """How much slower batch-1 inference runs while one other core-hog runs on the host (another process
    spinning): the cores' sharing penalty (SMT siblings, caches, the hypervisor), in alternating blocks."""
    engine, codec, rows = served_engine(model_dir, args)
    rng = random.Random(2)
    timings: dict[bool, list[float]] = {False: [], True: []}
    # pinned: the hog on the client's cores, the timed engine on the gateway's (the caller put it there)
    pin = "" if pinning is None else f"import os; os.sched_setaffinity(0, {sorted(pinning.client)})\n"
    spin = pin + "while True: pass"
    for block in range(2 * blocks):
        spinning = block % 2 == 1
        hog = subprocess.Popen([sys.executable, "-c", spin]) if spinning else None
        try:
            if hog is not None:
                time.sleep(0.05)  # the hog is running before the block is timed
            stop_at = time.perf_counter() + block_s
            while time.perf_counter() < stop_at:
                ids, mask = codec.collate(rng.sample(rows, 1))
                began = time.perf_counter()
                engine.infer(ids, mask)
                timings[spinning].append(time.perf_counter() - began)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    engine.close()
    return max(1.0, statistics.median(timings[True]) / statistics.median(timings[False]))


async def measure_overhead(url: str, count: int, gap_s: float = 0.0) -> tuple[list[float], list[float]]:
    """End-to-end latency of `count` single requests, one at a time (the queue is always empty), and the
    gateway's own time on each (its Server-Timing header). With `gap_s`, each waits an exponential idle gap
    of that mean first: an idle host wakes its threads (and a VM its cores) more slowly than a busy one, so
    the requests of a light load cost more than back-to-back ones (benchmarks/results/host_effects.json)."""
    import httpx

    latencies, gateway_times = [], []
    corpus = texts()
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        loop = asyncio.get_running_loop()
        gaps = random.Random(5)
        for index in range(count + OVERHEAD_WARMUP):
            if gap_s > 0:
                await asyncio.sleep(gaps.expovariate(1.0 / gap_s))
            body = {"texts": [corpus[index % len(corpus)]]}
            began = loop.time()
            response = await client.post(
                "/v1/classify", json=body, headers={"Authorization": f"Bearer {KEYS['premium']}"}
            )
            response.raise_for_status()
            if index >= OVERHEAD_WARMUP:
                latencies.append(loop.time() - began)
                gateway_ms = parse_gateway_ms(response.headers.get("server-timing"))
                if gateway_ms is None:
                    raise RuntimeError("the gateway's response has no Server-Timing header (serving/timing.py)")
                gateway_times.append(gateway_ms / 1000.0)
    return latencies, gateway_times


def calibrate(
    model_dir: Path,
    url: str,
    args: argparse.Namespace,
    batching: Any,
    gateway_pid: int,
    pinning: Pinning | None = None,
    gap_s: float = 0.0,
) -> dict[str, Any]:
    """The engine curve, the host's CPU per request and the per-request overhead left over, measured now.

    The CPU per request (the loops, the hop) comes from single requests back to back, the busy host a load
    keeps; the latency left over (residuals) from single requests `gap_s` apart on average (the coming load's
    mean spacing; 0: the same back-to-back ones), which also pay for waking an idle host."""
    with on_cores(None if pinning is None else pinning.gateway):  # the engine timed where the gateway runs it
        points = calibrate_engine(model_dir, args, batching.max_batch_size)
        contention = measure_contention(model_dir, args, pinning)
    cores = None if pinning is None else pinning.gateway
    engine_before = engine_totals(url)
    cpu_before = (cpu_seconds(gateway_pid), cpu_seconds(), host_busy_seconds(cores), time.monotonic())
    latencies, gateway_times = asyncio.run(measure_overhead(url, args.overhead_requests))
    cpu_after = (cpu_seconds(gateway_pid), cpu_seconds(), host_busy_seconds(cores), time.monotonic())
    single = engine_delta(engine_before, engine_totals(url))
    if gap_s > 0:
        latencies, gateway_times = asyncio.run(measure_overhead(url, args.overhead_requests, gap_s))
    alone = curve_from_points(points, "calibration in this run (engine alone, the gateway's batch shapes)")
    # The gateway's engine time per batch (its own counter: collate, the executor hop, the event loop resuming
    # the batch) exceeds the engine alone by a per-batch hop, measured here on the single requests (batch 1).
    mu, sigma = alone.lognormal(1)
    hop = max(0.0, single["engine_s_per_batch"] - math.exp(mu + sigma**2 / 2)) if single["batches"] else 0.0
    curve = ServiceCurve(
        alone.batch_sizes,
        tuple(value + hop for value in alone.p50_s),
        tuple(value + hop for value in alone.p99_s),
        source=f"{alone.source} + {hop * 1000:.3f} ms per batch in the gateway (single requests)",
    )
    # The event loops' CPU per request (single requests: nothing queues, nothing shares): the gateway process's
    # CPU minus its engine's time per request, and the client's (this process: only the requests ran here).
    requests = args.overhead_requests + OVERHEAD_WARMUP
    gateway_s, client_s, busy_s, wall_s = (after - before for after, before in zip(cpu_after, cpu_before, strict=True))
    loop_s = max(0.0, gateway_s / requests - single["engine_s_per_batch"])
    client_per_request = client_s / requests
    host = HostModel(
        cores=float(os.cpu_count() or 1) if pinning is None else 1.0,
        loop_in_s=loop_s / 2,
        loop_out_s=loop_s / 2,
        # pinned, the client runs on other cores: it takes none of the gateway's
        client_send_s=client_per_request / 2 if pinning is None else 0.0,
        client_receive_s=client_per_request / 2 if pinning is None else 0.0,
        engine_cores=float(args.threads),
        background_cores=max(0.0, (busy_s - gateway_s - (client_s if pinning is None else 0.0)) / wall_s),
        contention=contention,
        engine_gil_s=hop,  # the gateway's per-batch Python work: on the loop in the host model
        gil_switch_s=sys.getswitchinterval(),  # the engine's thread shares the loop's process (the default interval)
    )
    base = batching.max_wait_ms / 1000.0 + curve.p50(1)
    overhead = tuple(max(0.0, latency - base) for latency in latencies)
    # pinned, the client is not in the host model (it runs on other cores): its time stays in the residual
    modelled_client = client_per_request if pinning is None else 0.0
    residual = tuple(max(0.0, value - loop_s - modelled_client) for value in overhead)
    # The gateway's own time on the same requests, less what the host model puts there (its loop, the batch
    # window, the engine and the hop): what is left (timers, scheduling) is sampled onto its time per row.
    gateway_residual = tuple(max(0.0, value - base - loop_s) for value in gateway_times)
    return {
        "curve": curve,
        "engine_alone": alone,
        "overhead": overhead,
        "host": host,
        "residual": residual,
        "gateway_residual": gateway_residual,
        "summary": {
            "host": {
                "cores": host.cores,
                "gateway_loop_cpu_ms_per_request": round(loop_s * 1000, 3),
                "client_cpu_ms_per_request": round(client_per_request * 1000, 3),
                "background_cores": round(host.background_cores, 3),
                "contention": round(contention, 3),
                "residual_overhead_ms": {
                    "p50": round(float(np.percentile(residual, 50)) * 1000, 3),
                    "p99": round(float(np.percentile(residual, 99)) * 1000, 3),
                },
                "gateway_residual_ms": {
                    "p50": round(float(np.percentile(gateway_residual, 50)) * 1000, 3),
                    "p99": round(float(np.percentile(gateway_residual, 99)) * 1000, 3),
                },
            },
            "load_average": load_average(),
            "engine_curve_ms": {
                point.batch_size: {"p50": point.latency_p50_ms, "p99": point.latency_p99_ms, "n": point.iterations}
                for point in points
            },
            "gateway_hop_ms_per_batch": round(hop * 1000, 3),
            "single_request_ms": {
                "p50": round(float(np.percentile(latencies, 50)) * 1000, 3),
                "p99": round(float(np.percentile(latencies, 99)) * 1000, 3),
                "n": len(latencies),
            },
            "single_request_gateway_ms": {
                "p50": round(float(np.percentile(gateway_times, 50)) * 1000, 3),
                "p99": round(float(np.percentile(gateway_times, 99)) * 1000, 3),
            },
            "overhead_ms": {
                "p50": round(float(np.percentile(overhead, 50)) * 1000, 3),
                "p99": round(float(np.percentile(overhead, 99)) * 1000, 3),
            },
        },
    }


def engine_totals(url: str) -> dict[str, float]:
    """The gateway's own engine counters: device seconds (all tenants), batches and rows."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    totals = {"device_s": 0.0, "batches": 0.0, "rows": 0.0}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "infopt_tenant_device_seconds_total":
                totals["device_s"] += sample.value
            elif sample.name == "infopt_batch_size_count":
                totals["batches"] += sample.value
            elif sample.name == "infopt_batch_size_sum":
                totals["rows"] += sample.value
    return totals


def engine_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    batches = after["batches"] - before["batches"]
    return {
        "batches": batches,
        "mean_batch_size": round((after["rows"] - before["rows"]) / batches, 3) if batches else 0.0,
        "engine_s_per_batch": round((after["device_s"] - before["device_s"]) / batches, 6) if batches else 0.0,
    }


def host_busy_seconds(cores: set[int] | None = None) -> float:
    """CPU seconds the host's cores (or only `cores`) spent busy since boot (everything but idle and I/O wait)."""
    import psutil

    busy = ("user", "nice", "system", "irq", "softirq", "steal")
    if cores is None:
        times = psutil.cpu_times()
        return sum(getattr(times, name, 0.0) for name in busy)
    per_core = psutil.cpu_times(percpu=True)
    return sum(getattr(per_core[core], name, 0.0) for core in cores for name in busy)


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (all its threads); None: this process."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def host_cpu(gateway_s: float, client_s: float, wall_s: float, requests: int) -> dict[str, float]:
    """Where the host's cores went during one load: the gateway process (event loop + engine) and the client."""
    return {
        "wall_s": round(wall_s, 2),
        "cores": os.cpu_count() or 0,
        "gateway_cores_busy": round(gateway_s / wall_s, 3),
        "client_cores_busy": round(client_s / wall_s, 3),
        "gateway_cpu_ms_per_request": round(1000 * gateway_s / max(1, requests), 3),
        "client_cpu_ms_per_request": round(1000 * client_s / max(1, requests), 3),
    }


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


# ----------------------------------------------------------------------------- prediction
ALL = "all"  # every class's requests together: the load's own p99, the one the goal judges


def relative_error(predicted: float | None, measured: float | None) -> float | None:
    return None if predicted is None or not measured else round((predicted - measured) / measured, 4)


def compared(
    end_to_end: LatencySummary | None,
    gateway: LatencySummary | None,
    predicted: dict[str, dict[str, Any]],
    without_host: dict[str, dict[str, Any]],
    name: str,
    agent_pod: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Measured vs predicted p50/p99 of one class (or ALL): the gateway's own time and end to end; with
    `agent_pod`, also the gateway p99 the scaling node's own pod model predicts (agent.frontend.host_model)."""
    got = predicted.get(name, {})
    row: dict[str, Any] = {}
    for view, summary in (("gateway_", gateway), ("", end_to_end)):  # the gateway's own time; end to end
        measured_p99 = summary.p99 if summary else None
        row |= {
            f"measured_{view}p50_ms": summary.p50 if summary else None,
            f"measured_{view}p99_ms": measured_p99,
            f"predicted_{view}p50_ms": got.get(f"{view}p50_ms"),
            f"predicted_{view}p99_ms": got.get(f"{view}p99_ms"),
            f"predicted_{view}p99_ms_seed_range": got.get(f"{view}p99_ms_seed_range"),
            f"relative_error_{view}p99": relative_error(got.get(f"{view}p99_ms"), measured_p99),
        }
    row["predicted_p99_ms_without_host"] = without_host.get(name, {}).get("p99_ms")
    if agent_pod is not None:
        agent_p99 = agent_pod.get(name, {}).get("gateway_p99_ms")
        row["predicted_gateway_p99_ms_agent_pod_model"] = agent_p99
        row["relative_error_gateway_p99_agent_pod_model"] = relative_error(agent_p99, row["measured_gateway_p99_ms"])
    return row


def predict(model: GatewayModel, rate: float, *, duration_s: float, seeds: int) -> dict[str, dict[str, Any]]:
    """Per class and for all classes together (ALL), the median over seeds of the simulated p50/p99: end to
    end (the client's view) and the gateway's own time (its Server-Timing view)."""
    groups = [*MIX, ALL]
    samples: dict[str, dict[str, list[float]]] = {
        name: {"p50_ms": [], "p99_ms": [], "gateway_p50_ms": [], "gateway_p99_ms": []} for name in groups
    }
    queue = []
    for seed in range(seeds):
        rng = random.Random(1000 + seed)
        arrivals = poisson_arrivals([{name: rate * share for name, share in MIX.items()}], duration_s, rng)
        result = simulate(model, arrivals, seed=seed, warmup_s=min(WARMUP_S, duration_s / 10))
        for name in groups:
            chosen = list(result.classes.values()) if name == ALL else [result.classes[name]]
            end_to_end = [value for klass in chosen for value in klass.latencies_s]
            gateway = [value for klass in chosen for value in klass.gateway_latencies_s]
            if not end_to_end or not gateway:
                continue
            for key, values, q in (
                ("p50_ms", end_to_end, 50),
                ("p99_ms", end_to_end, 99),
                ("gateway_p50_ms", gateway, 50),
                ("gateway_p99_ms", gateway, 99),
            ):
                samples[name][key].append(float(np.percentile(values, q)) * 1000.0)
        queue.append(result.mean_queue_per_pod)
    predicted: dict[str, dict[str, Any]] = {}
    for name in groups:
        found = samples[name]
        if not found["p99_ms"]:
            continue
        predicted[name] = {key: round(statistics.median(values), 3) for key, values in found.items()}
        for key in ("p99_ms", "gateway_p99_ms"):
            predicted[name][f"{key}_seed_range"] = [round(min(found[key]), 3), round(max(found[key]), 3)]
    return predicted | {"_mean_queue": {"value": round(statistics.mean(queue), 3)}}


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("serve", help="(internal) run the gateway under test")
    for target in (parser, child):
        target.add_argument("--params", type=Path, default=Path("params.yaml"))
        target.add_argument("--deployment", default="textcls-premium", help="whose batching the gateway uses")
        target.add_argument("--threads", type=int, default=1, help="engine intra-op threads (the pod's 1 CPU)")
        target.add_argument("--max-len", type=int, default=64)
        target.add_argument(
            "--gateway-core", type=int, default=None,
            help="pin the gateway to this core and the load generator to the others: a 1-core pod, client elsewhere",
        )  # fmt: skip
    child.add_argument("--model-dir", type=Path, required=True)
    child.add_argument("--port", type=int, required=True)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument(
        "--loads", default="0.2,0.4,0.6,0.75", help="total rates as fractions of the engine's batch capacity"
    )
    parser.add_argument("--duration", type=float, default=90.0, help="seconds of load per level")
    parser.add_argument("--calibration-seconds", type=float, default=1.5, help="per batch size")
    parser.add_argument("--overhead-requests", type=int, default=200)
    parser.add_argument("--sim-seconds", type=float, default=120.0, help="simulated seconds per seed")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--min-samples", type=int, default=500, help="judge a class's p99 only with at least this many responses"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/simulator_validation.json"))
    args = parser.parse_args()
    if args.command == "serve":
        serve(args)
        return

    from infopt.fingerprint import collect

    params = load_params(args.params)
    batching = params.deployment(args.deployment).batching or params.serving.batching
    pinning = Pinning.of(args.gateway_core)
    if pinning is not None:  # this process (the load generator) off the gateway's core from now on
        os.sched_setaffinity(0, pinning.client)
    load_before = load_average()
    started = time.monotonic()
    levels = [float(part) for part in args.loads.split(",")]
    measured = []
    with tempfile.TemporaryDirectory(prefix="infopt-simval-") as folder:
        model_dir = build_model(
            Path(folder) / "model", hidden=args.hidden, layers=args.layers, heads=args.heads, max_len=args.max_len
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        gateway = start_gateway(args, model_dir, port, args.gateway_core)
        try:
            wait_ready(gateway, f"{url}/v2/health/ready", timeout_s=120.0)
            # The rates: fractions of the engine's capacity at max batch, from a first calibration.
            first = calibrate(model_dir, url, args, batching, gateway.pid, pinning)
            capacity = first["curve"].throughput(batching.max_batch_size)
            for index, level in enumerate(levels):
                rate = round(capacity * level, 1)
                # just before this load, its single requests spaced like its arrivals (1 / rate apart on average)
                calibration = calibrate(model_dir, url, args, batching, gateway.pid, pinning, gap_s=1.0 / rate)
                streams = [
                    Stream(
                        name=name,
                        api_key=KEYS[name],
                        mode="open",
                        rate_per_s=rate * share,
                        duration_s=args.duration,
                        sla_class=name,
                        texts=texts(),
                        warmup_s=min(WARMUP_S, args.duration / 10),
                    )
                    for name, share in MIX.items()
                ]
                before = load_average()
                engine_before = engine_totals(url)
                cpu_before = (cpu_seconds(gateway.pid), cpu_seconds(), time.monotonic())
                report = asyncio.run(run_load(url, streams, model="validation", seed=10 * index, timeout_s=30))
                cpu = host_cpu(
                    cpu_seconds(gateway.pid) - cpu_before[0],
                    cpu_seconds() - cpu_before[1],
                    time.monotonic() - cpu_before[2],
                    sum(stream.sent for stream in report.streams),
                )
                in_load = engine_delta(engine_before, engine_totals(url))
                measured.append((level, rate, before, load_average(), calibration, report, in_load, cpu))
        finally:
            stop(gateway)
    load_after = load_average()

    rows = []
    errors = []
    end_to_end_errors = []
    for level, rate, before, after, calibration, report, in_load, cpu in measured:
        engine_only = GatewayModel(
            classes=class_specs(params.sla_classes),
            batching=batching_spec(batching),
            curve=calibration["curve"],
            queue_capacity=params.serving.queue_capacity,
            engine_replicas=1,
            overhead_s=calibration["overhead"],
        )
        # The prediction: the same model with the host around the engine (event loops, shared cores, the
        # per-batch hop as Python work on the loop instead of engine time), the overhead samples less the
        # loops' CPU. Beside it, what the engine-only model predicted (diagnostic).
        model = replace(
            engine_only,
            curve=calibration["engine_alone"],
            host=calibration["host"],
            overhead_s=calibration["residual"],
            gateway_overhead_s=calibration["gateway_residual"],
        )
        predicted = predict(model, rate, duration_s=args.sim_seconds, seeds=args.seeds)
        without_host = predict(engine_only, rate, duration_s=args.sim_seconds, seeds=args.seeds)
        # What the scaling node simulates for a pod with this front-end CPU (agent/scaling.py): the curve, the
        # loop's CPU split around the batch on the pod's cores, nothing else (no residuals, no interpreter lock)
        host = calibration["host"]
        front_end = FrontEndCpu(host.loop_in_s + host.loop_out_s, "this calibration", "single requests", ())
        agent_pod = predict(
            replace(
                engine_only, overhead_s=(), host=host_model(front_end, cores=host.cores, engine_threads=args.threads)
            ),
            rate,
            duration_s=args.sim_seconds,
            seeds=args.seeds,
        )
        curve = calibration["curve"]
        mu, sigma = curve.lognormal(max(1, round(in_load["mean_batch_size"])))
        expected_s = math.exp(mu + sigma**2 / 2)  # the calibrated lognormal's mean at the load's mean batch size
        slowdown = in_load["engine_s_per_batch"] / expected_s if expected_s > 0 and in_load["batches"] else None
        classes = {
            stream.name: compared(
                stream.latency_ms, stream.gateway_latency_ms, predicted, without_host, stream.name, agent_pod
            )
            | {
                "sent": stream.sent,
                "ok": stream.ok,
                "status_429": stream.status_429,
                "status_503": stream.status_503,
                "expired": stream.expired,
                "errors": stream.errors,
                "latency_samples": stream.latency_samples,
                "send_lag_p99_ms": stream.send_lag_ms.p99 if stream.send_lag_ms is not None else None,
                "elapsed_s": stream.elapsed_s,
            }
            for stream in report.streams
        }
        pooled = compared(report.latency_ms, report.gateway_latency_ms, predicted, without_host, ALL, agent_pod)
        samples = sum(stream.latency_samples for stream in report.streams)
        client_saturated = cpu["client_cores_busy"] >= CLIENT_SATURATED_CORES
        late = [
            stream.name
            for stream in report.streams
            if (stream.send_lag_ms is not None and (stream.send_lag_ms.p99 or 0.0) > MAX_SEND_LAG_P99_MS)
            or stream.elapsed_s > stream.duration_s * (1 + MAX_OVERRUN)
        ]
        error = pooled["relative_error_gateway_p99"]
        judged = error is not None and samples >= args.min_samples and not client_saturated and not late
        if judged:
            errors.append(abs(error))
            if pooled["relative_error_p99"] is not None:
                end_to_end_errors.append(abs(pooled["relative_error_p99"]))
        pooled |= {
            "latency_samples": samples,
            "judged": judged,
            "not_judged_because": None
            if judged
            else "the load generator's event loop was saturated (its backlog is in the latencies)"
            if client_saturated
            else f"the load generator fell behind its Poisson schedule on {late} (send lag p99 > "
            f"{MAX_SEND_LAG_P99_MS} ms, or the load ran over its duration by more than {MAX_OVERRUN:.0%}): the "
            "offered load was not the simulated one"
            if late
            else f"fewer than {args.min_samples} responses"
            if error is not None
            else "no prediction or no measurement",
            "within_goal": judged and error is not None and abs(error) <= GOAL,
        }
        for name, row in [*classes.items(), (ALL, pooled)]:
            print(
                f"load {level:.2f} ({rate:7.1f} req/s) {name:8}: gateway p99 measured "
                f"{row['measured_gateway_p99_ms']} ms, predicted {row['predicted_gateway_p99_ms']} ms, error "
                f"{row['relative_error_gateway_p99']}; end to end measured {row['measured_p99_ms']} ms, predicted "
                f"{row['predicted_p99_ms']} ms, error {row['relative_error_p99']}"
                + f"; agent pod model {row.get('predicted_gateway_p99_ms_agent_pod_model')} ms"
                + ("" if name != ALL else f"; judged {judged} {pooled['not_judged_because'] or ''}")
            )
        rows.append(
            {
                "load_fraction_of_capacity": level,
                "offered_rps": rate,
                "load_average_before": before,
                "load_average_after": after,
                "calibration": calibration["summary"],
                "engine_during_load": in_load
                | {"slowdown_vs_calibration": None if slowdown is None else round(slowdown, 3), "host_cpu": cpu},
                "predicted_mean_queue": predicted["_mean_queue"]["value"],
                ALL: pooled,
                "classes": classes,
            }
        )
    result = {
        "benchmark": "simulator_validation",
        "goal": f"predicted p99 within {GOAL:.0%} of measured at several loads: the gateway's p99 (its own time "
        "per request, the Server-Timing header of serving/timing.py, what its latency histogram and SLA see); the "
        "client's end-to-end p99 reported beside it, not judged (this load generator shares the 2 cores and adds "
        "its own HTTP library's time, connection setup included)",
        "method": {
            "gateway": "serving.app in its own process on 127.0.0.1 (uvicorn, uvloop, httptools), one engine "
            f"replica, {args.threads} intra-op thread(s), batching of deployments[{args.deployment}]: "
            f"{batching.model_dump()}",
            "model": f"BERT encoder, random weights, hidden {args.hidden}, {args.layers} layers, {args.heads} heads, "
            f"ONNX Runtime fp32, texts of 30-60 words (max_len {args.max_len} tokens)",
            "client": "harness.loadgen, open-loop Poisson per class, in the benchmark's process (its CPU is "
            "counted in each load's engine_during_load.host_cpu)",
            "pinning": None
            if pinning is None
            else f"the gateway process (event loop, engine, executor threads) pinned to core {args.gateway_core}, the "
            f"load generator and the contention hog to cores {sorted(pinning.client)}: a 1-core pod with its "
            "client elsewhere; the engine calibrations run on the gateway's core, the host model has 1 core, no "
            "client CPU on it, and that core's other busy time as background",
            "agent_pod_model": "predicted_gateway_p99_ms_agent_pod_model: the scaling node's model of a pod "
            "(agent.frontend.host_model: the calibrated curve, the loop's CPU per request split around the batch on "
            "the pod's cores, no residual overheads, no interpreter-lock switch); reported, not judged",
            "mix": MIX,
            "duration_s_per_load": args.duration,
            "warmup_s": f"the first {min(WARMUP_S, args.duration / 10)} s of each load (measured) and of each "
            f"simulated run ({min(WARMUP_S, args.sim_seconds / 10)} s) are left out of the percentiles",
            "judged": f"per load, on all its requests together (the classes are reported beside it: at these loads "
            "they share one queue that is rarely full, and a class's p99 from a third of the samples carries more "
            f"sampling error); a load counts toward the goal when it has >= {args.min_samples} responses and the "
            "load generator "
            f"used < {CLIENT_SATURATED_CORES} of a core (a saturated generator measures its own backlog) and kept "
            f"its schedule (send lag p99 <= {MAX_SEND_LAG_P99_MS} ms, the load over within {MAX_OVERRUN:.0%} of "
            "its duration: a late generator bunches its arrivals, which the simulated Poisson load does not)",
            "rates": f"fractions {levels} of the engine's throughput at max_batch_size from a first calibration "
            f"({capacity:.1f} req/s)",
            "simulation": f"{args.seeds} seeds x {args.sim_seconds} simulated seconds per load; median of the "
            "per-seed p99",
            "calibration": "before EACH load: the engine's batch-time curve (batch 1..max, the gateway's codec "
            "shapes, engine alone in this process), shifted by the gateway's per-batch hop (its own engine-seconds "
            "counter per batch on single requests minus the engine alone's batch-1 mean); the host model "
            "(agent.simulator.HostModel) from the same single requests, back to back: the gateway process's CPU "
            "per request minus its engine seconds per request (its event loop, half before the queue and half "
            "after the batch), this process's CPU per request (the client's loop, half to send and half to "
            "receive), the host's other busy cores from /proc/stat; and from a second set of single requests, "
            "each after an exponential idle gap of the load's mean spacing (1 / rate: an idle host wakes its "
            "threads more slowly), the residual per-request overhead (end-to-end latency minus max_wait, the "
            "shifted batch-1 median and both loops' CPU; for the gateway's own time: its Server-Timing minus "
            "max_wait, the shifted batch-1 median and its loop's CPU); single_request_ms are those spaced requests",
            "prediction": "the simulator with the host model: per class the gateway's own time per row (from its "
            "loop taking the request up to the answer leaving it) and the end-to-end latency; the engine's thread "
            "shares the gateway's process, so a batch starts when the loop has drained or the interpreter's switch "
            "interval has passed (HostModel.gil_switch_s); "
            "predicted_p99_ms_without_host is the engine-only model (the overhead samples added to each row), "
            "for comparison",
        },
        "load_average": {"before": load_before, "after": load_after},
        "wall_s": round(time.monotonic() - started, 1),
        "loads": rows,
        "max_abs_relative_error_p99": round(max(errors), 4) if errors else None,
        "max_abs_relative_error_p99_end_to_end": round(max(end_to_end_errors), 4) if end_to_end_errors else None,
        "all_within_goal": bool(errors) and max(errors) <= GOAL,
        "fingerprint": collect().model_dump(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"max |error| {result['max_abs_relative_error_p99']}; all within {GOAL:.0%}: {result['all_within_goal']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
