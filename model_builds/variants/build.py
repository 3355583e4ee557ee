"""Dispatch each enabled variant of params to the builder of its kind; write variant.json per variant."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console

from infopt.device import resolve_device
from infopt.fingerprint import collect
from infopt.manifest import VariantBuild
from infopt.params import Params, load_params
from infopt.paths import PREPARED_DIR, TEACHER_DIR, VARIANTS_DIR
from model_builds.variants import baseline, distilled, fp8, half, int8_onnx, pruned
from model_builds.variants.context import BuildContext
from model_builds.variants.record import write_variant_build

BUILDERS: dict[str, Callable[..., VariantBuild]] = {
    "baseline": baseline.build,
    "half": half.build,
    "int8_onnx": int8_onnx.build,
    "pruned": pruned.build,
    "distilled": distilled.build,
    "fp8": fp8.build,
}


def build_variants(params: Params, ctx: BuildContext, console: Console | None = None) -> list[VariantBuild]:
    """Build every enabled variant in params order; disabled ones get no folder (a stale one is removed)."""
    console = console or Console()
    builds = []
    for variant in params.variants:
        variant_dir = ctx.variant_dir(variant.name)
        if not variant.enabled:
            if variant_dir.exists():
                shutil.rmtree(variant_dir)
            console.print(f"[dim]{variant.name}: disabled[/]")
            continue
        started = time.perf_counter()
        torch.manual_seed(ctx.seed)
        record = BUILDERS[variant.kind](variant, ctx)
        record.details["build_seconds"] = round(time.perf_counter() - started, 2)
        write_variant_build(record, variant_dir)
        builds.append(record)
        if record.status == "skipped":
            console.print(f"[yellow]{variant.name}[/] ({variant.kind}): skipped: {record.skip_reason}")
        else:
            sizes = ", ".join(f"{a.engine} {a.size_bytes / 1e6:.1f} MB" for a in record.artifacts)
            console.print(
                f"[green]{variant.name}[/] ({variant.kind}, {record.precision}): {sizes} in {record.details['build_seconds']}s"
            )
    return builds


METRICS_PATH = Path("metrics/variants.json")


def write_builds_metrics(builds: list[VariantBuild], device: str) -> None:
    """Every build record (sizes, sparsity, KD vs no-KD, build seconds) as a committed DVC metrics file."""
    report = {
        "variants": {build.name: build.model_dump(exclude={"artifacts"}) for build in builds},
        "fingerprint": collect(device).model_dump(),
    }
    METRICS_PATH.parent.mkdir(parents=True, exist_ok=True)
    METRICS_PATH.write_text(json.dumps(report, indent=2) + "\n")


def main() -> None:
    params = load_params("params.yaml")
    device = resolve_device(params.device)
    ctx = BuildContext(
        teacher_dir=TEACHER_DIR,
        data_dir=PREPARED_DIR,
        out_root=VARIANTS_DIR,
        repo_root=Path.cwd(),
        seed=params.seed,
        device=device,
        max_seq_len=params.model.max_seq_len,
        train=params.train,
        onnx="onnxruntime" in params.benchmark.engines,
    )
    try:
        builds = build_variants(params, ctx)
    finally:
        ctx.close()
    write_builds_metrics(builds, device)
    from infopt.tracking import log_stage

    for build in builds:
        values = {
            "status": build.status,
            "precision": build.precision,
            "parameters": build.parameters,
            "sparsity": build.sparsity,
            **build.details,
        }
        log_stage(params, build.name, "variants", values, prefix="build_")


if __name__ == "__main__":
    main()
