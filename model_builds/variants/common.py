"""Steps several builders share: save a torch model as hf/ + onnx/ and describe it."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from infopt.manifest import VariantBuild
from model_builds.modeling import count_nonzero_parameters, count_parameters, linear_sparsity, save_classifier
from model_builds.variants.context import BuildContext
from model_builds.variants.onnx_export import export_onnx


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def export_fp32(
    model: torch.nn.Module, ctx: BuildContext, variant_dir: Path, name: str, kind: str, details: dict
) -> VariantBuild:
    """Save `model` (fp32) to hf/, export it to onnx/ (when ONNX is measured), and return the built record."""
    hf_dir, onnx_dir = variant_dir / "hf", variant_dir / "onnx"
    for path in (hf_dir, onnx_dir):
        if path.exists():
            shutil.rmtree(path)
    model = model.to("cpu").float().eval()
    save_classifier(model, ctx.tokenizer, hf_dir)
    details = dict(details)
    artifacts = [ctx.artifact(hf_dir, "torch", "hf-safetensors", "fp32")]
    if ctx.onnx:
        details["onnx_export_max_abs_diff"] = export_onnx(hf_dir, onnx_dir, ctx.max_seq_len)
        artifacts.append(ctx.artifact(onnx_dir, "onnxruntime", "onnx", "fp32"))
    details["nonzero_parameters"] = count_nonzero_parameters(model)
    return VariantBuild(
        name=name,
        kind=kind,
        precision="fp32",
        status="built",
        artifacts=artifacts,
        parameters=count_parameters(model),
        sparsity=linear_sparsity(model),
        details=details,
    )


def skipped(name: str, kind: str, precision: str, reason: str, details: dict | None = None) -> VariantBuild:
    return VariantBuild(
        name=name, kind=kind, precision=precision, status="skipped", skip_reason=reason, details=details or {}
    )
