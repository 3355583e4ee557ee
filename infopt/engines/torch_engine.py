"""PyTorch engine: eager on CPU; on CUDA optionally torch.compile (CUDA graphs via reduce-overhead).

On CUDA in fp16/bf16 the cuDNN attention backend of SDPA is switched off while the engine lives: cuDNN builds
an execution plan for every new input shape (about 50 ms each on an H200), and served batches come in every
(batch, length) shape; flash / memory-efficient attention need no plan
(benchmarks/results/gpu/ladder-2026-12-01/hf_precision_probe.json: fp16 batch 1 over new lengths 55 ms a call with it, 5.2 ms
without).

A model folder with `sparsity.json` ({"pattern": "2:4", "modules": [...]}) was pruned to NVIDIA's 2:4 pattern:
on CUDA its listed Linear weights are converted to torch's semi-structured sparse format, so the matmuls run
on the sparse tensor cores (what is served is sparse, and the benchmark times exactly that).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from infopt.engines.base import EngineError
from infopt.engines.cuda_wait import to_numpy

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
SPARSITY_FILE = "sparsity.json"


class TorchEngine:
    name = "torch"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
        compile: bool = False,
    ) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        if precision not in DTYPES:
            raise ValueError(f"precision {precision!r} is not one of {sorted(DTYPES)} for the torch engine")
        if threads:
            self._previous_threads = torch.get_num_threads()  # intra-op threads are process-wide: restored on close
            torch.set_num_threads(threads)
        self._torch = torch
        self.device = device
        if device == "cuda" and precision in ("fp16", "bf16"):
            self._previous_cudnn_sdp = torch.backends.cuda.cudnn_sdp_enabled()
            torch.backends.cuda.enable_cudnn_sdp(False)
        dtype = getattr(torch, DTYPES[precision])
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=dtype)
        self.model = model.to(device).eval()
        self.sparse_modules = self._sparsify(Path(model_dir)) if device == "cuda" else 0
        self._forward = torch.compile(self.model, mode="reduce-overhead") if compile else self.model

    def _sparsify(self, model_dir: Path) -> int:
        """Swap the 2:4-pruned Linear weights for semi-structured sparse tensors; returns how many."""
        marker = model_dir / SPARSITY_FILE
        if not marker.is_file():
            return 0
        from torch.sparse import to_sparse_semi_structured

        spec = json.loads(marker.read_text())
        if spec.get("pattern") != "2:4":
            raise ValueError(f"{marker}: pattern {spec.get('pattern')!r} is not '2:4'")
        for name in spec["modules"]:
            linear = self.model.get_submodule(name)
            linear.weight = self._torch.nn.Parameter(to_sparse_semi_structured(linear.weight.detach()))
        return len(spec["modules"])

    def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        try:
            with torch.inference_mode():
                ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)).to(self.device)
                mask = torch.from_numpy(np.ascontiguousarray(attention_mask, dtype=np.int64)).to(self.device)
                logits = self._forward(input_ids=ids, attention_mask=mask).logits  # (B, C)
                return to_numpy(logits.float())
        except Exception as error:  # any failure inside the model is the batch's failure
            raise EngineError(f"torch failed on a batch of shape {input_ids.shape}: {error}") from error

    _previous_threads: int | None = None
    _previous_cudnn_sdp: bool | None = None

    def close(self) -> None:
        self.model = None
        torch = self._torch
        if self._previous_threads is not None:
            torch.set_num_threads(self._previous_threads)
            self._previous_threads = None
        if self._previous_cudnn_sdp is not None:
            torch.backends.cuda.enable_cudnn_sdp(self._previous_cudnn_sdp)
            self._previous_cudnn_sdp = None
