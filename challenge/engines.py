"""The engines the ladder measures and the gateway serves, built from one JSON-able `EngineSpec`.

What is measured is what is served: `build_engine(spec)` is called by the ladder for the model-level
numbers and by each gateway child process (challenge/gateway_child.py) for the numbers through the gateway.

- `hf`: the project's `infopt.engines.torch_engine.TorchEngine` (HF eager forward, as the pipeline
  serves it; a 2:4 variant's `sparsity.json` turns on its sparse kernels); `tf32` is fp32 with TF32
  matmuls (`torch.set_float32_matmul_precision("high")`, process-wide, restored on close).
- `onnxruntime`: the project's `OnnxRuntimeEngine` on an ONNX artifact (fp32, or the int8 variants).
- `static`: challenge/forward.py's `StaticBert` (fused QKV, no host synchronisation), eager or from CUDA
  graphs of padded shapes (challenge/static_engine.py), or with `packed` its tokens end to end with no
  padding, one graph per token-count bucket (challenge/packed.py).
"""

from __future__ import annotations

import numpy as np

from challenge.engine_spec import EngineSpec
from challenge.packed import PackedEngine
from challenge.static_engine import StaticEngine
from infopt.engines.base import Engine, EngineError

__all__ = ["EngineSpec", "PackedEngine", "StaticEngine", "Tf32Engine", "build_engine", "release"]


class Tf32Engine:
    """TorchEngine in fp32 with TF32 tensor-core matmuls on while it lives."""

    def __init__(self, spec: EngineSpec) -> None:
        import torch

        from infopt.engines.torch_engine import TorchEngine

        self._torch = torch
        self._previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")
        self.inner = TorchEngine(spec.model_dir, device=spec.device, precision="fp32", threads=spec.threads)
        self.name, self.device = "torch", str(spec.device)

    def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.inner.infer(input_ids, attention_mask)

    def close(self) -> None:
        self.inner.close()
        self._torch.set_float32_matmul_precision(self._previous)


def build_engine(spec: EngineSpec) -> Engine:
    """The engine `spec` describes (loaded, graphs captured, ready for `infer`)."""
    if spec.family == "onnxruntime":
        from infopt.engines.onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(spec.model_dir, device=spec.device, threads=spec.threads)
    if spec.family == "hf":
        if spec.precision == "tf32":
            return Tf32Engine(spec)
        if spec.precision == "int8":
            raise EngineError("int8 is served by ONNX Runtime (family onnxruntime), not the HF engine")
        from infopt.engines.torch_engine import TorchEngine

        return TorchEngine(spec.model_dir, device=spec.device, precision=spec.precision, threads=spec.threads)
    return PackedEngine(spec) if spec.packed else StaticEngine(spec)


def release(engine: Engine) -> None:
    """Close an engine and give its GPU memory back before the next one is built."""
    engine.close()
    if getattr(engine, "device", "cpu") == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
