"""Load the in-process engine replicas a gateway settings object asks for."""

from __future__ import annotations

from pathlib import Path

from serving.engines.base import Engine


def load_engine(engine: str, model_dir: Path, *, device: str, precision: str, threads: int | None) -> Engine:
    if engine == "onnxruntime":
        from serving.engines.onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(model_dir, device=device, threads=threads)
    if engine == "torch":
        from serving.engines.torch_engine import TorchEngine

        return TorchEngine(model_dir, device=device, precision=precision, threads=threads)
    raise ValueError(f"engine {engine!r} is not an in-process engine (onnxruntime, torch)")


def load_replicas(
    engine: str, model_dir: Path, replicas: int, *, device: str, precision: str, threads: int | None
) -> list[Engine]:
    if replicas < 1:
        raise ValueError(f"engine_replicas is {replicas}; must be >= 1")
    return [load_engine(engine, model_dir, device=device, precision=precision, threads=threads) for _ in range(replicas)]
