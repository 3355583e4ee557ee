"""Load the in-process engine for an artifact: the one loader of the pipeline, the gateway and the benchmarks."""

from __future__ import annotations

from pathlib import Path

from infopt.engines.base import Engine


def load_engine(engine: str, model_dir: Path, *, device: str, precision: str, threads: int | None) -> Engine:
    if engine == "onnxruntime":
        from infopt.engines.onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(model_dir, device=device, threads=threads)
    if engine == "torch" and precision == "fp8":
        from infopt.engines.fp8_engine import Fp8Engine

        return Fp8Engine(model_dir, device=device, threads=threads)
    if engine == "torch":
        from infopt.engines.torch_engine import TorchEngine

        return TorchEngine(model_dir, device=device, precision=precision, threads=threads)
    raise ValueError(f"engine {engine!r} is not an in-process engine (onnxruntime, torch)")


def load_replicas(
    engine: str, model_dir: Path, replicas: int, *, device: str, precision: str, threads: int | None
) -> list[Engine]:
    if replicas < 1:
        raise ValueError(f"engine_replicas is {replicas}; must be >= 1")
    return [
        load_engine(engine, model_dir, device=device, precision=precision, threads=threads) for _ in range(replicas)
    ]
