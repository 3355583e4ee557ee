"""half: the teacher in float16/bfloat16 for torch, and an fp16 ONNX graph with fp32 inputs/outputs.

The fp16 ONNX comes from onnxruntime.transformers' float16 converter (keep_io_types=True) applied to the
fp32 export, so it is produced on any machine; ONNX has no bf16 kernels on CPU, so a bfloat16 variant
ships the torch artifact only and says why in `details`.
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import torch

from infopt.manifest import VariantBuild
from infopt.params import HalfVariant
from model_builds.modeling import count_parameters, linear_sparsity, save_classifier
from model_builds.variants.common import fresh_dir
from model_builds.variants.context import BuildContext
from model_builds.variants.onnx_export import copy_side_files

PRECISION = {"float16": "fp16", "bfloat16": "bf16"}


def convert_onnx_fp16(src: str, dst: str) -> None:
    from onnxruntime.transformers import float16

    model = float16.convert_float_to_float16(onnx.load(src), keep_io_types=True)
    onnx.save(model, dst)


def _onnx_check(path: str, ctx: BuildContext) -> float:
    """Max |logit diff| of the fp16 graph vs the fp32 graph on a few validation batches."""
    import onnxruntime as ort

    fp16 = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    fp32 = ort.InferenceSession(str(ctx.fp32_onnx_dir() / "model.onnx"), providers=["CPUExecutionProvider"])
    worst = 0.0
    for index, (ids, mask, _) in enumerate(ctx.split("val").batches(32)):
        feed = {"input_ids": ids, "attention_mask": mask}
        worst = max(worst, float(np.abs(fp16.run(None, feed)[0] - fp32.run(None, feed)[0]).max()))
        if index == 2:
            break
    return worst


def build(variant: HalfVariant, ctx: BuildContext) -> VariantBuild:
    precision = PRECISION[variant.dtype]
    variant_dir = ctx.variant_dir(variant.name)
    model = ctx.teacher().to(getattr(torch, variant.dtype))
    hf_dir = fresh_dir(variant_dir / "hf")
    save_classifier(model, ctx.tokenizer, hf_dir)
    artifacts = [ctx.artifact(hf_dir, "torch", "hf-safetensors", precision)]
    details: dict = {"torch_dtype": variant.dtype}
    onnx_dir = variant_dir / "onnx"
    if variant.dtype == "float16" and ctx.onnx:
        fresh_dir(onnx_dir)
        convert_onnx_fp16(str(ctx.fp32_onnx_dir() / "model.onnx"), str(onnx_dir / "model.onnx"))
        copy_side_files(ctx.fp32_onnx_dir(), onnx_dir)
        details["onnx_fp16_max_abs_diff_vs_fp32"] = _onnx_check(str(onnx_dir / "model.onnx"), ctx)
        details["onnx_io_types"] = "fp32"
        artifacts.append(ctx.artifact(onnx_dir, "onnxruntime", "onnx", "fp16"))
    else:
        if onnx_dir.exists():  # a stale fp16 export from an earlier float16 run of this variant
            shutil.rmtree(onnx_dir)
        details["onnx_skipped"] = (
            "onnxruntime is not among benchmark.engines"
            if not ctx.onnx
            else "bfloat16 has no ONNX Runtime CPU kernels; torch artifact only"
        )
    return VariantBuild(
        name=variant.name,
        kind=variant.kind,
        precision=precision,
        status="built",
        artifacts=artifacts,
        parameters=count_parameters(model),
        sparsity=linear_sparsity(model),
        details=details,
    )
