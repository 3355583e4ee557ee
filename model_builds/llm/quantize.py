"""INT8 W8A8 in the compressed-tensors format, written without llm-compressor, and read back in torch.

The folder is a standard Hugging Face checkpoint that vLLM loads unchanged (`quant_method:
compressed-tensors`, format `int-quantized`): every targeted nn.Linear stores `weight` as int8 [out, in]
plus `weight_scale` [out, 1] (symmetric, one scale per output channel, no zero point); activations are
quantized per token at run time (symmetric, dynamic), so no calibration data is needed. On x86 CPUs vLLM
runs these layers with its oneDNN int8 kernels.

`load_w8a8` rebuilds the same arithmetic in torch for the quality stage: the stored int8 weights and
scales, and per-token int8 activations with round-half-to-even as the kernels do. The products are summed
in float32, exact while |sum| < 2**24 (in_features <= ~1000) and within float32 rounding beyond that.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

INT8_MAX = 127.0
QUANT_FORMAT = "int-quantized"

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class QuantizeError(ValueError):
    """The model or folder cannot be quantized/read as W8A8; the message names the module or file."""


def quantization_config(ignore: Iterable[str]) -> dict:
    """The `quantization_config` block of config.json (compressed-tensors schema)."""
    return {
        "quant_method": "compressed-tensors",
        "format": QUANT_FORMAT,
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {
                    "num_bits": 8,
                    "type": "int",
                    "symmetric": True,
                    "strategy": "channel",
                    "dynamic": False,
                    "group_size": None,
                    "block_structure": None,
                    "actorder": None,
                    "observer": "minmax",
                },
                "input_activations": {
                    "num_bits": 8,
                    "type": "int",
                    "symmetric": True,
                    "strategy": "token",
                    "dynamic": True,
                    "group_size": None,
                    "block_structure": None,
                    "actorder": None,
                    "observer": None,
                },
                "output_activations": None,
            }
        },
        "ignore": sorted(ignore),
        "kv_cache_scheme": None,
        "global_compression_ratio": None,
    }


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 [out, in], float32 scale [out, 1]): symmetric per output channel, range [-127, 127]."""
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1, keepdim=True) / INT8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row stays zero
    quantized = torch.round(weight / scale).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return quantized, scale


def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token symmetric dynamic int8 (values kept as float for the matmul) and the scales [..., 1]."""
    scale = x.abs().amax(dim=-1, keepdim=True).float() / INT8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(x.float() / scale).clamp_(-128.0, INT8_MAX), scale


def _targets(model: nn.Module, ignore: set[str]) -> list[str]:
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name not in ignore and name.split(".")[-1] not in ignore
    ]


def write_w8a8(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, out: Path, ignore: Iterable[str]
) -> dict[str, int]:
    """Save `model` (a float HF causal LM) as a W8A8 compressed-tensors folder with its tokenizer.

    Returns counts: quantized layers and parameters stored in int8.
    """
    from safetensors.torch import save_file

    ignore = set(ignore)
    targets = _targets(model, ignore)
    if not targets:
        raise QuantizeError(f"no nn.Linear outside {sorted(ignore)} to quantize in {type(model).__name__}")
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    int8_params = 0
    for name in targets:
        quantized, scale = quantize_weight(state[f"{name}.weight"])
        state[f"{name}.weight"] = quantized.contiguous()
        state[f"{name}.weight_scale"] = scale.contiguous()
        int8_params += quantized.numel()
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # tied: the embedding matrix is the one stored copy
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config["quantization_config"] = quantization_config(ignore)
    config.pop("torch_dtype", None)
    config["dtype"] = "float32"  # activations and scales in float32: the torch check computes the same
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"quantized_layers": len(targets), "int8_parameters": int8_params}


class W8A8Linear(nn.Module):
    """y = (q(x) * s_x) @ (W_q * s_w)^T + b, with q() the per-token int8 quantizer: the kernel's arithmetic."""

    def __init__(self, weight_q: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight_q", weight_q.to(torch.int8))
        self.register_buffer("weight_scale", weight_scale.float().reshape(-1, 1))
        self.register_buffer("bias", None if bias is None else bias.float())
        self.in_features = weight_q.shape[1]
        self.out_features = weight_q.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, x_scale = quantize_activations(x)  # (..., in), (..., 1)
        y = (xq @ self.weight_q.float().t()) * x_scale * self.weight_scale.t()  # (..., out)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)


def load_w8a8(folder: Path) -> nn.Module:
    """A torch model computing what vLLM computes for the W8A8 folder (see the module docstring)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = json.loads((folder / "config.json").read_text())
    quant = raw.get("quantization_config") or {}
    if quant.get("quant_method") != "compressed-tensors" or quant.get("format") != QUANT_FORMAT:
        raise QuantizeError(f"{folder}/config.json is not a compressed-tensors {QUANT_FORMAT} checkpoint")
    plain = {key: value for key, value in raw.items() if key != "quantization_config"}
    config = AutoConfig.for_model(**plain)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    state = load_file(str(folder / "model.safetensors"))
    quantized = sorted(key[: -len(".weight_scale")] for key in state if key.endswith(".weight_scale"))
    for name in quantized:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        original = getattr(parent, child)
        if not isinstance(original, nn.Linear):
            raise QuantizeError(f"{folder}: {name} has a weight_scale but is a {type(original).__name__}")
        bias = state.pop(f"{name}.bias", None)
        setattr(parent, child, W8A8Linear(state.pop(f"{name}.weight"), state.pop(f"{name}.weight_scale"), bias))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.endswith(("weight_q", "weight_scale", "lm_head.weight"))]
    if missing or unexpected:
        raise QuantizeError(f"{folder}: state does not match the model (missing {missing}, unexpected {unexpected})")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    return model.eval()
