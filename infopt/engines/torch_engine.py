"""PyTorch engine: eager on CPU; on CUDA optionally torch.compile (CUDA graphs via reduce-overhead)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from infopt.engines.base import EngineError

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


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
            torch.set_num_threads(threads)
        self._torch = torch
        self.device = device
        dtype = getattr(torch, DTYPES[precision])
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=dtype)
        self.model = model.to(device).eval()
        self._forward = torch.compile(self.model, mode="reduce-overhead") if compile else self.model

    def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        try:
            with torch.inference_mode():
                ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)).to(self.device)
                mask = torch.from_numpy(np.ascontiguousarray(attention_mask, dtype=np.int64)).to(self.device)
                logits = self._forward(input_ids=ids, attention_mask=mask).logits  # (B, C)
                return logits.float().cpu().numpy()
        except Exception as error:  # any failure inside the model is the batch's failure
            raise EngineError(f"torch failed on a batch of shape {input_ids.shape}: {error}") from error

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
