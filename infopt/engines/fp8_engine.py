"""FP8 engine: Linear weights in float8_e4m3fn with per-tensor scales, matmuls through torch._scaled_mm.

Serves the fp8 variant's hf/ folder (config, tokenizer, fp8 safetensors + fp8.json) under the same engine
contract as the others. Only on a CUDA GPU of compute capability >= 8.9 (Ada/Hopper), where FP8 tensor
cores exist. Activations are quantized per tensor at run time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from infopt.engines.base import EngineError
from infopt.engines.cuda_wait import to_numpy

FP8_MAX = 448.0  # largest finite float8_e4m3fn


def fp8_support(device: str) -> str | None:
    """None when FP8 matmuls can run here, else why not."""
    if device != "cuda":
        return f"fp8 needs a Hopper/Ada GPU (compute capability >= 8.9); this run's device is {device}"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 9):
        return f"fp8 needs compute capability >= 8.9; this GPU ({torch.cuda.get_device_name()}) has {major}.{minor}"
    return None


class Fp8Linear(torch.nn.Module):
    weight: torch.Tensor  # float8_e4m3fn (out, in), a buffer
    weight_scale: torch.Tensor  # per-tensor scale, a buffer
    bias: torch.nn.Parameter | None

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.float8_e4m3fn))
        self.register_buffer("weight_scale", torch.ones((), dtype=torch.float32))
        self.bias = torch.nn.Parameter(torch.zeros(out_features, dtype=torch.bfloat16)) if bias else None

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear) -> Fp8Linear:
        module = cls(linear.in_features, linear.out_features, linear.bias is not None).to(linear.weight.device)
        weight = linear.weight.detach().float()
        scale = weight.abs().max().clamp(min=1e-12) / FP8_MAX
        module.weight.copy_((weight / scale).to(torch.float8_e4m3fn))
        module.weight_scale.copy_(scale)
        if linear.bias is not None and module.bias is not None:
            module.bias.data.copy_(linear.bias.detach().to(torch.bfloat16))
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, self.in_features).float()
        pad = (-rows.shape[0]) % 16
        if pad:
            rows = torch.nn.functional.pad(rows, (0, 0, 0, pad))
        x_scale = rows.abs().max().clamp(min=1e-12) / FP8_MAX
        out = torch._scaled_mm(
            (rows / x_scale).to(torch.float8_e4m3fn),
            self.weight.t(),
            scale_a=x_scale,
            scale_b=self.weight_scale,
            bias=self.bias,
            out_dtype=torch.bfloat16,
        )
        return out[: out.shape[0] - pad].reshape(*shape[:-1], self.out_features)


def load_fp8(model_dir: Path, device: str = "cuda") -> torch.nn.Module:
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_config(config).to(torch.bfloat16)
    for name in json.loads((model_dir / "fp8.json").read_text())["fp8_modules"]:
        linear = model.get_submodule(name)
        parent_name, _, child = name.rpartition(".")
        setattr(
            model.get_submodule(parent_name),
            child,
            Fp8Linear(linear.in_features, linear.out_features, linear.bias is not None),
        )
    model.load_state_dict(load_file(str(model_dir / "model.safetensors")))
    return model.to(device).eval()


class Fp8Engine:
    """The infopt.engines contract for an fp8 hf/ folder (CUDA only)."""

    name = "torch"

    def __init__(self, model_dir: str | Path, *, device: str = "cuda", threads: int | None = None) -> None:
        reason = fp8_support(device)
        if reason:
            raise EngineError(reason)
        if threads:
            self._previous_threads = torch.get_num_threads()  # intra-op threads are process-wide: restored on close
            torch.set_num_threads(threads)
        self.device = device
        self.model = load_fp8(Path(model_dir), device)

    def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        try:
            with torch.inference_mode():
                ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)).to(self.device)
                mask = torch.from_numpy(np.ascontiguousarray(attention_mask, dtype=np.int64)).to(self.device)
                return to_numpy(self.model(input_ids=ids, attention_mask=mask).logits.float())
        except Exception as error:  # as TorchEngine: any failure inside the model is the batch's failure
            raise EngineError(f"fp8 failed on a batch of shape {input_ids.shape}: {error}") from error

    _previous_threads: int | None = None

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        if self._previous_threads is not None:
            import torch

            torch.set_num_threads(self._previous_threads)
            self._previous_threads = None
