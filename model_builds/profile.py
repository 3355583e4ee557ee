"""Stage `profile`: where each variant spends its time, per op and per layer.

Torch artifacts: torch.profiler with a record_function label around every top-level block (embeddings,
encoder.layer.N.attention, encoder.layer.N.intermediate/output = FFN, pooler, classifier). ONNX-only
variants (int8): ONNX Runtime's own profiler, aggregated per op type and per node, with the node names
(exported from the same modules) mapped onto the same layers. Both give the attention / FFN / embeddings
/ other split a profiler agent reads ("attention takes 61% of the time").
Writes metrics/profiles/<variant>.json and a readable <variant>.txt.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infopt.device import onnxruntime_device, resolve_device
from infopt.fingerprint import collect
from infopt.manifest import Artifact, VariantBuild
from infopt.params import Params, load_params
from infopt.paths import PROFILES_DIR
from model_builds.benchmark import ServedBatches, served_batches
from model_builds.measuring import load_texts, open_engine, write_json
from model_builds.variants.record import enabled_builds, narrow_builds

LABEL = "layer::"
# Top-level blocks of BERT-family encoders (BERT/RoBERTa: encoder.layer.N.*, DistilBERT: transformer.layer.N.*).
_LAYER = re.compile(r"(?:^|\.)(?:encoder|transformer)\.layers?\.(\d+)\.(attention|intermediate|output|ffn)(?:\.|$)")
_EMBEDDINGS = re.compile(r"(?:^|\.)embeddings(?:\.|$)")
_POOLER = re.compile(r"(?:^|\.)pooler(?:\.|$)")
_CLASSIFIER = re.compile(r"(?:^|\.)(?:classifier|pre_classifier)(?:\.|$)")
GROUPS = ("attention", "ffn", "embeddings", "other")


def layer_of(module_path: str) -> str | None:
    """Map a module path or ONNX node name to its layer label, or None when it belongs to none."""
    path = module_path.strip("/").replace("/", ".")
    if match := _LAYER.search(path):
        index, block = match.groups()
        return f"encoder.layer.{index}.{'attention' if block == 'attention' else 'ffn'}"
    if _EMBEDDINGS.search(path):
        return "embeddings"
    if _POOLER.search(path):
        return "pooler"
    if _CLASSIFIER.search(path):
        return "classifier"
    return None


def group_of(layer: str) -> str:
    if layer.endswith(".attention"):
        return "attention"
    if layer.endswith(".ffn"):
        return "ffn"
    return "embeddings" if layer == "embeddings" else "other"


def _ordered_layers(names: Iterable[str]) -> list[str]:
    def key(name: str) -> tuple[int, int, str]:
        if name == "embeddings":
            return (0, 0, name)
        if match := re.match(r"encoder\.layer\.(\d+)\.(\w+)", name):
            return (1, int(match.group(1)), match.group(2))
        return (2, 0, name) if name != "other" else (3, 0, name)

    return sorted(names, key=key)


def layer_table(layer_us: Mapping[str, float], total_us: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows (layer, time, % of total) incl. an `other` remainder, and the attention/FFN/embeddings/other split."""
    times = {name: value for name, value in layer_us.items() if value > 0}
    times["other"] = max(0.0, total_us - sum(times.values()))
    total = sum(times.values()) or 1.0
    rows = [
        {"layer": name, "time_ms": times[name] / 1000.0, "percent": 100.0 * times[name] / total}
        for name in _ordered_layers(times)
    ]
    split_us: dict[str, float] = defaultdict(float)
    for name, value in times.items():
        split_us[group_of(name)] += value
    split = {
        group: {"time_ms": split_us[group] / 1000.0, "percent": 100.0 * split_us[group] / total} for group in GROUPS
    }
    return rows, split


def _module_labels(model: Any) -> list[tuple[str, Any]]:
    """The disjoint top-level blocks to label (a block inside a labelled block is not labelled again)."""
    chosen: list[tuple[str, Any]] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(parent + ".") for parent, _ in chosen):
            continue
        path = name.replace("/", ".")
        layer = _LAYER.search(path)
        if (layer is not None and layer.end() == len(path)) or re.search(
            r"(?:^|\.)(embeddings|pooler|classifier|pre_classifier)$", path
        ):
            chosen.append((name, module))
    return chosen


@contextmanager
def without_kineto_chatter() -> Iterator[None]:
    """torch's profiler (kineto) writes `USDT:... profiler_start/stop` lines straight to file descriptor 2; keep
    everything else it writes to stderr, drop those lines (they are noise in every pipeline log)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [
                line for line in sink.read().decode(errors="replace").splitlines(True) if not line.startswith("USDT:")
            ]
            sys.stderr.write("".join(kept))


def profile_torch(
    artifact: Artifact, batches: ServedBatches, params: Params, device: str, root: Path
) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    config = params.profile
    engine = open_engine(artifact, device, params.benchmark.threads[-1], root)
    model = engine.model
    handles = []
    open_labels: dict[int, Any] = {}
    for name, module in _module_labels(model):
        label = LABEL + (layer_of(name) or name)

        def pre(mod: Any, _inputs: Any, label: str = label) -> None:
            open_labels[id(mod)] = record_function(label).__enter__()

        def post(mod: Any, _inputs: Any, _output: Any) -> None:
            open_labels.pop(id(mod)).__exit__(None, None, None)

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    batch_ids, batch_mask = batches.batch(config.batch_size, 0)
    engine.infer(batch_ids, batch_mask)  # warm-up outside the trace
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    try:
        with without_kineto_chatter(), profile(activities=activities, record_shapes=True) as trace:
            for index in range(config.iters):
                batch_ids, batch_mask = batches.batch(config.batch_size, index)
                with record_function("forward"):
                    engine.infer(batch_ids, batch_mask)
            if device == "cuda":
                torch.cuda.synchronize()
    finally:
        for handle in handles:
            handle.remove()
        engine.close()
    events = trace.key_averages()
    on_gpu = device == "cuda"

    def self_us(event: Any) -> float:
        return float(event.self_device_time_total if on_gpu else event.self_cpu_time_total)

    def total_us(event: Any) -> float:
        return float(event.device_time_total if on_gpu else event.cpu_time_total)

    ops = [event for event in events if not event.key.startswith(LABEL) and event.key != "forward"]
    ops_total = sum(self_us(event) for event in ops) or 1.0
    top = sorted(ops, key=self_us, reverse=True)[: config.top_k]
    forward_us = sum(total_us(event) for event in events if event.key == "forward")
    layer_us = {event.key[len(LABEL) :]: total_us(event) for event in events if event.key.startswith(LABEL)}
    rows, split = layer_table(layer_us, forward_us)
    return {
        "profiler": "torch.profiler",
        "engine": "torch",
        "execution_device": device,
        "time_basis": "self CUDA time" if on_gpu else "self CPU time",
        "total_ms": forward_us / 1000.0,
        "top_ops": [
            {
                "op": event.key,
                "calls": int(event.count),
                "self_time_ms": self_us(event) / 1000.0,
                "percent": 100.0 * self_us(event) / ops_total,
            }
            for event in top
        ],
        "layers": rows,
        "split": split,
    }


def profile_onnx(artifact: Artifact, batches: ServedBatches, params: Params, device: str, root: Path) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    config = params.profile
    model_path = root / artifact.path
    model_file = model_path / "model.onnx" if model_path.is_dir() else model_path
    ort_device, note = onnxruntime_device(device)  # cuda without onnxruntime-gpu: profiled on the CPU, said below
    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = params.benchmark.threads[-1]
        options.inter_op_num_threads = 1
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "ort")
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"] if ort_device == "cuda" else ["CPUExecutionProvider"]
        )
        session = ort.InferenceSession(str(model_file), sess_options=options, providers=providers)
        used = list(session.get_providers())
        names = {item.name for item in session.get_inputs()}
        output = session.get_outputs()[0].name
        for index in range(config.iters + 1):  # the first run is the warm-up, dropped below
            batch_ids, batch_mask = batches.batch(config.batch_size, index)
            feed = {"input_ids": batch_ids, "attention_mask": batch_mask}
            if "token_type_ids" in names:
                feed["token_type_ids"] = np.zeros_like(batch_ids)
            session.run([output], feed)
        trace = json.loads(Path(session.end_profiling()).read_text())
    runs = [event for event in trace if event.get("cat") == "Session" and event.get("name") == "model_run"]
    warmup_end = runs[0]["ts"] + runs[0]["dur"] if runs else 0
    nodes = [
        event
        for event in trace
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time") and event["ts"] >= warmup_end
    ]
    by_op: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    by_node: dict[str, list[Any]] = defaultdict(lambda: [0, 0.0, ""])
    for event in nodes:
        op = event.get("args", {}).get("op_name", "?")
        node = event["name"][: -len("_kernel_time")]
        by_op[op][0] += 1
        by_op[op][1] += float(event["dur"])
        by_node[node][0] += 1
        by_node[node][1] += float(event["dur"])
        by_node[node][2] = op
    total = sum(value for _, value in by_op.values()) or 1.0
    layer_us: dict[str, float] = defaultdict(float)
    for node, (_, value, _) in by_node.items():
        layer = layer_of(node)
        if layer is not None:
            layer_us[layer] += value
    rows, split = layer_table(layer_us, total)
    run_total = sum(float(event["dur"]) for event in runs[1:])
    return {
        "profiler": "onnxruntime (SessionOptions.enable_profiling)",
        "engine": "onnxruntime",
        "execution_device": ort_device,
        "providers": used,
        **({"execution_note": note} if note else {}),
        "time_basis": "kernel time per node",
        "total_ms": total / 1000.0,
        "session_run_ms": run_total / 1000.0,
        "top_ops": [
            {"op": op, "calls": int(calls), "self_time_ms": value / 1000.0, "percent": 100.0 * value / total}
            for op, (calls, value) in sorted(by_op.items(), key=lambda item: item[1][1], reverse=True)[: config.top_k]
        ],
        "top_nodes": [
            {
                "node": node,
                "op": op,
                "calls": int(calls),
                "self_time_ms": value / 1000.0,
                "percent": 100.0 * value / total,
            }
            for node, (calls, value, op) in sorted(by_node.items(), key=lambda item: item[1][1], reverse=True)[
                : config.top_k
            ]
        ],
        "layers": rows,
        "split": split,
    }


def profile_variant(build: VariantBuild, params: Params, texts: list[str], device: str, root: Path) -> dict[str, Any]:
    """Profile the torch artifact when the variant has one, else its ONNX artifact."""
    artifact = build.find_artifact("torch") or build.find_artifact("onnxruntime")
    if artifact is None:
        raise ValueError(f"variant {build.name!r} is built but has no torch or onnxruntime artifact")
    batches = served_batches(artifact, texts, params.model.max_seq_len, root)
    run = profile_torch if artifact.engine == "torch" else profile_onnx
    result = run(artifact, batches, params, device, root)
    widths = [batches.batch(params.profile.batch_size, index)[0].shape[1] for index in range(params.profile.iters)]
    return {
        "variant": build.name,
        "artifact": artifact.path,
        "precision": artifact.precision,
        "device": device,
        "batch_size": params.profile.batch_size,
        "seq_len": round(float(sum(widths)) / len(widths), 1),  # mean padded width of the profiled batches
        "iters": params.profile.iters,
        **result,
    }


def render_text(report: Mapping[str, Any]) -> str:
    """The readable table of one profile (what <variant>.txt holds)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(record=True, width=120, file=open("/dev/null", "w"))  # noqa: SIM115 - recorded, not shown
    split = report["split"]
    console.print(
        f"{report['variant']} ({report['engine']}, {report['precision']}, "
        f"{report.get('execution_device', report['device'])}): batch "
        f"{report['batch_size']} x seq {report['seq_len']}, {report['iters']} iters, {report['profiler']}"
    )
    fingerprint = report.get("fingerprint")
    if fingerprint:
        from model_builds.plots import footer

        console.print(f"measured on {footer(fingerprint)}")
    console.print("split: " + ", ".join(f"{group} {split[group]['percent']:.1f}%" for group in GROUPS))
    layers = Table(title="time per layer")
    for column in ("layer", "time ms", "% of total"):
        layers.add_column(column, justify="left" if column == "layer" else "right")
    for row in report["layers"]:
        layers.add_row(row["layer"], f"{row['time_ms']:.3f}", f"{row['percent']:.1f}")
    console.print(layers)
    ops = Table(title=f"top ops by {report['time_basis']}")
    for column in ("op", "calls", "time ms", "% of total"):
        ops.add_column(column, justify="left" if column == "op" else "right")
    for row in report["top_ops"]:
        ops.add_row(row["op"], str(row["calls"]), f"{row['self_time_ms']:.3f}", f"{row['percent']:.1f}")
    console.print(ops)
    if "top_nodes" in report:
        nodes = Table(title="top nodes")
        for column in ("node", "op", "time ms", "%"):
            nodes.add_column(column, justify="left" if column in ("node", "op") else "right")
        for row in report["top_nodes"]:
            nodes.add_row(row["node"], row["op"], f"{row['self_time_ms']:.3f}", f"{row['percent']:.1f}")
        console.print(nodes)
    text = console.export_text()
    console.file.close()
    return text


def run_profiles(params: Params, root: Path = Path("."), out_dir: Path = PROFILES_DIR) -> dict[str, Path]:
    """Profile every built variant (or those `profile.variants` names); returns variant -> JSON path."""
    device = resolve_device(params.device)
    texts = load_texts("test", root)
    fingerprint = collect(device, repo=root).model_dump()
    out = root / out_dir
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for build in narrow_builds(enabled_builds(params, root), params.profile.variants):
        if build.status != "built":
            continue
        report = {**profile_variant(build, params, texts, device, root), "fingerprint": fingerprint}
        write_json(out / f"{build.name}.json", report)
        (out / f"{build.name}.txt").write_text(render_text(report))
        written[build.name] = out / f"{build.name}.json"
    return written


def main() -> None:
    run_profiles(load_params("params.yaml"))


if __name__ == "__main__":
    main()
