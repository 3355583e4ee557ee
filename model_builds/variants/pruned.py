"""pruned: magnitude pruning of the teacher's encoder, then a short fine-tune with the zeros kept.

l1_unstructured: `amount` of each encoder Linear's weights with the smallest |w| set to 0 (torch's
  prune.l1_unstructured, made permanent with prune.remove); masks re-applied after every optimiser step.
structured_heads_ffn: per layer, the `amount` least important attention heads (L1 norm of their slice of
  the attention output projection) are removed with HF `prune_heads`, and the same fraction of FFN
  channels (L1 norm of the channel's in+out weights) with `prune_linear_layer`: physically smaller layers.
semi_structured_2_4: 2 of every 4 consecutive input weights zeroed (NVIDIA 2:4), fine-tuned with the masks
  kept, saved in fp16 with `sparsity.json` naming the pruned layers: the torch engine serves those layers
  with torch's semi-structured sparse kernels (CUDA, compute capability >= 8.0), so the benchmark measures
  whether 2:4 is faster on this GPU. Elsewhere the variant is recorded as skipped. No ONNX export: ONNX
  Runtime has no 2:4 kernels, and a dense copy would not be the sparse model.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import torch
from torch.nn.utils import prune

from infopt.manifest import VariantBuild
from infopt.params import PrunedVariant
from model_builds.modeling import count_parameters, linear_sparsity, save_classifier, train_classifier
from model_builds.variants.common import export_fp32, fresh_dir, skipped
from model_builds.variants.context import BuildContext


def encoder_linears(model: Any) -> list[torch.nn.Linear]:
    return [module for module in model.base_model.encoder.modules() if isinstance(module, torch.nn.Linear)]


def l1_unstructured_masks(model: Any, amount: float) -> dict[torch.nn.Linear, torch.Tensor]:
    masks = {}
    for module in encoder_linears(model):
        prune.l1_unstructured(module, "weight", amount=amount)
        prune.remove(module, "weight")
        masks[module] = module.weight.detach() != 0
    return masks


def two_four_masks(model: Any) -> dict[torch.nn.Linear, torch.Tensor]:
    """Keep the 2 largest |w| of every 4 consecutive weights along the input dimension."""
    masks = {}
    with torch.no_grad():
        for module in encoder_linears(model):
            weight = module.weight
            groups = weight.abs().reshape(-1, 4)
            keep = torch.zeros_like(groups, dtype=torch.bool)
            keep.scatter_(1, groups.topk(2, dim=1).indices, True)
            mask = keep.reshape(weight.shape)
            weight.mul_(mask)
            masks[module] = mask
    return masks


def mask_hook(masks: dict[torch.nn.Linear, torch.Tensor]):
    def apply(_model: Any) -> None:
        with torch.no_grad():
            for module, mask in masks.items():
                module.weight.mul_(mask.to(module.weight.device))

    return apply


def prune_heads_and_ffn(model: Any, amount: float) -> dict:
    """Remove the least important heads and FFN channels of every layer, in place; returns what was cut."""
    from transformers.pytorch_utils import prune_linear_layer

    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    n_heads = min(config.num_attention_heads - 1, round(amount * config.num_attention_heads))
    n_channels = min(config.intermediate_size - 1, round(amount * config.intermediate_size))
    to_prune: dict[int, list[int]] = {}
    layers = model.base_model.encoder.layer
    for index, layer in enumerate(layers):
        weight = layer.attention.output.dense.weight.detach()  # (hidden, heads * head_dim)
        importance = weight.abs().reshape(weight.shape[0], config.num_attention_heads, head_dim).sum(dim=(0, 2))
        to_prune[index] = sorted(importance.argsort()[:n_heads].tolist())
    if n_heads:
        model.prune_heads(to_prune)
    keep = config.intermediate_size - n_channels
    for layer in layers:
        score = layer.intermediate.dense.weight.detach().abs().sum(1) + layer.output.dense.weight.detach().abs().sum(0)
        index = score.argsort(descending=True)[:keep].sort().values
        layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, index, dim=0)
        layer.output.dense = prune_linear_layer(layer.output.dense, index, dim=1)
    model.config.intermediate_size = keep
    return {"heads_removed_per_layer": n_heads, "ffn_channels_kept": keep, "ffn_channels_removed": n_channels}


def semi_structured_support(device: str) -> str | None:
    """None when 2:4 sparse kernels can run here, else the reason they cannot."""
    if device != "cuda":
        return f"2:4 semi-structured sparsity needs torch's CUDA sparse kernels (compute capability >= 8.0); this run's device is {device}"
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return f"2:4 semi-structured sparsity needs compute capability >= 8.0; this GPU has {major}.{minor}"
    return None


def build(variant: PrunedVariant, ctx: BuildContext) -> VariantBuild:
    if variant.method == "semi_structured_2_4":
        reason = semi_structured_support(ctx.device)
        if reason:
            return skipped(variant.name, variant.kind, "fp32", reason, {"method": variant.method})
    model: Any = ctx.teacher()
    before = sum(p.numel() for p in model.parameters())
    details: dict = {"method": variant.method, "amount": variant.amount, "finetune_epochs": variant.finetune_epochs}
    hook = None
    if variant.method == "l1_unstructured":
        hook = mask_hook(l1_unstructured_masks(model, variant.amount))
    elif variant.method == "semi_structured_2_4":
        hook = mask_hook(two_four_masks(model))
    else:
        details.update(prune_heads_and_ffn(model, variant.amount))
    details["parameters_before"] = before
    result = train_classifier(
        model,
        ctx.split("train"),
        ctx.split("val"),
        ctx.train,
        ctx.seed,
        ctx.device,
        epochs=variant.finetune_epochs,
        after_step=hook,
        description=f"finetune {variant.name}",
    )
    model.to("cpu")
    details["val_accuracy"] = result.best_val_accuracy
    details["encoder_linear_sparsity"] = linear_sparsity(model, model.base_model.encoder)
    if variant.method == "semi_structured_2_4":
        return export_two_four(model, ctx, variant, details)
    return export_fp32(model, ctx, ctx.variant_dir(variant.name), variant.name, variant.kind, details)


def sparse_capable(model: Any, device: str) -> tuple[list[str], list[str]]:
    """Encoder Linear layers whose 2:4 weights torch's semi-structured format accepts on this GPU (its kernels
    have shape rules), and those that must stay dense."""
    from torch.sparse import to_sparse_semi_structured

    wanted = set(encoder_linears(model))
    capable, dense = [], []
    for name, module in model.named_modules():
        if module not in wanted:
            continue
        try:
            to_sparse_semi_structured(module.weight.detach().to(device))
        except (RuntimeError, ValueError):
            dense.append(name)
        else:
            capable.append(name)
    return capable, dense


def export_two_four(model: Any, ctx: BuildContext, variant: PrunedVariant, details: dict) -> VariantBuild:
    """hf/ in fp16 plus sparsity.json; the served (sparse) engine's logits are checked against dense fp16."""
    from infopt.engines.torch_engine import SPARSITY_FILE, TorchEngine

    variant_dir = ctx.variant_dir(variant.name)
    hf_dir = fresh_dir(variant_dir / "hf")
    if (variant_dir / "onnx").exists():
        shutil.rmtree(variant_dir / "onnx")
    model = model.half().eval()
    capable, dense = sparse_capable(model, ctx.device)
    save_classifier(model, ctx.tokenizer, hf_dir)
    (hf_dir / SPARSITY_FILE).write_text(json.dumps({"pattern": "2:4", "modules": capable}, indent=2) + "\n")
    sparse = TorchEngine(hf_dir, device=ctx.device, precision="fp16")
    dense = model.to(ctx.device)
    ids, mask, _ = next(ctx.split("val").batches(64))
    with torch.inference_mode():
        reference = (
            dense(input_ids=torch.from_numpy(ids).to(ctx.device), attention_mask=torch.from_numpy(mask).to(ctx.device))
            .logits.float()
            .cpu()
            .numpy()
        )
    details["sparse_modules"] = sparse.sparse_modules
    details["dense_fallback_modules"] = ",".join(dense)
    details["sparse_vs_dense_max_abs_logit_diff"] = float(abs(sparse.infer(ids, mask) - reference).max())
    sparse.close()
    return VariantBuild(
        name=variant.name,
        kind=variant.kind,
        precision="fp16",
        status="built",
        artifacts=[ctx.artifact(hf_dir, "torch", "hf-safetensors", "fp16")],
        parameters=count_parameters(model),
        sparsity=linear_sparsity(model),
        details=details,
    )
