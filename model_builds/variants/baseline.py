"""baseline: the teacher as served, an fp32 HF copy (torch) and its fp32 ONNX export (onnxruntime)."""

from __future__ import annotations

from infopt.manifest import VariantBuild
from infopt.params import BaselineVariant
from model_builds.modeling import evaluate_accuracy
from model_builds.variants.common import export_fp32
from model_builds.variants.context import BuildContext


def build(variant: BaselineVariant, ctx: BuildContext) -> VariantBuild:
    model = ctx.teacher()
    details = {"val_accuracy": evaluate_accuracy(model, ctx.split("val"), ctx.train.batch_size, "cpu")}
    return export_fp32(model, ctx, ctx.variant_dir(variant.name), variant.name, variant.kind, details)
