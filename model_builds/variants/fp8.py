"""fp8: Linear weights in float8_e4m3fn with per-tensor scales (served by infopt.engines.fp8_engine).

Only on a CUDA GPU of compute capability >= 8.9 (Ada/Hopper), where FP8 tensor cores exist; anywhere
else the variant is recorded as skipped with the reason. Activations are quantized per tensor at run
time; Linear layers whose dimensions are not multiples of 16 (the classifier head) stay in bfloat16.
The artifact is hf/ (config, tokenizer, fp8 safetensors + fp8.json); `Fp8Engine` serves it.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from infopt.engines.fp8_engine import Fp8Engine, Fp8Linear, fp8_support
from infopt.manifest import VariantBuild
from infopt.params import Fp8Variant
from model_builds.modeling import count_parameters, linear_sparsity, save_classifier
from model_builds.variants.common import fresh_dir, skipped
from model_builds.variants.context import BuildContext


def convert(model: torch.nn.Module) -> list[str]:
    """Swap every eligible nn.Linear for an Fp8Linear in place; returns the converted module names."""
    names = []
    for name, module in list(model.named_modules()):
        if isinstance(module, torch.nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, Fp8Linear.from_linear(module))
            names.append(name)
    return names


def build(variant: Fp8Variant, ctx: BuildContext) -> VariantBuild:
    reason = fp8_support(ctx.device)
    if reason:
        return skipped(variant.name, variant.kind, "fp8", reason)
    from safetensors.torch import save_file

    model = ctx.teacher().to(ctx.device, torch.bfloat16)
    names = convert(model)
    hf_dir = fresh_dir(ctx.variant_dir(variant.name) / "hf")
    save_classifier(ctx.teacher(), ctx.tokenizer, hf_dir)  # config + tokenizer; weights replaced below
    save_file(
        {k: v.contiguous().cpu() for k, v in model.state_dict().items()},
        str(hf_dir / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (hf_dir / "fp8.json").write_text(
        json.dumps({"fp8_modules": names, "scale": "per-tensor", "dtype": "float8_e4m3fn"}, indent=2)
    )
    reloaded = Fp8Engine(hf_dir, device=ctx.device)
    val = ctx.split("val")
    predictions = np.concatenate(
        [reloaded.infer(ids, mask) for ids, mask, _ in val.batches(ctx.train.batch_size)]
    ).argmax(-1)
    return VariantBuild(
        name=variant.name,
        kind=variant.kind,
        precision="fp8",
        status="built",
        artifacts=[ctx.artifact(hf_dir, "torch", "hf-safetensors", "fp8")],
        parameters=count_parameters(ctx.teacher()),
        sparsity=linear_sparsity(ctx.teacher()),
        details={
            "fp8_linear_layers": len(names),
            "val_accuracy": float(np.mean(predictions == val.labels)),
            "engine_class": "infopt.engines.fp8_engine.Fp8Engine",
        },
    )
