"""ONNX Runtime engine: CPU, or CUDA where onnxruntime-gpu is installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from infopt.engines.base import EngineError


class OnnxRuntimeEngine:
    name = "onnxruntime"

    def __init__(self, model_path: str | Path, *, device: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        model_path = Path(model_path)
        if model_path.is_dir():
            model_path = model_path / "model.onnx"
        if not model_path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {model_path}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise EngineError(
                f"device cuda asked for, but this onnxruntime has only {available}; install onnxruntime-gpu"
            )
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        self.device = device
        self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
        self._inputs = {item.name for item in self.session.get_inputs()}
        self._output = self.session.get_outputs()[0].name

    def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        try:
            (logits,) = self.session.run([self._output], feed)
        except Exception as error:  # onnxruntime raises its own Fail/InvalidArgument types
            raise EngineError(f"onnxruntime failed on a batch of shape {input_ids.shape}: {error}") from error
        return np.asarray(logits, dtype=np.float32)

    def close(self) -> None:
        self.session = None
