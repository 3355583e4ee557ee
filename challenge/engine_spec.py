"""What one engine is, as JSON: the ladder measures it and each gateway child builds the same from it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class EngineSpec(BaseModel):
    """Everything needed to build one engine; serialised into the gateway child's spec file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Literal["hf", "static", "onnxruntime"]
    model_dir: str  # an hf/ folder (hf, static) or an onnx/ folder (onnxruntime)
    variant: str  # the pipeline variant the artifact belongs to
    precision: Literal["fp32", "tf32", "fp16", "bf16", "int8"] = "fp32"
    linear: Literal["dense", "fp8", "sparse24"] = "dense"
    graphs: bool = False
    batch_sizes: tuple[int, ...] = ()  # graphs: the captured batch sizes
    length_buckets: tuple[int, ...] = ()  # graphs: the captured padded lengths
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int | None = None
    pad_id: int = 0
    fused_gelu: bool | None = None  # static: GELU in the matmul epilogue (None: on CUDA for fp16/bf16 dense)
    split_lengths: bool = False  # graphs: run a batch as length-bucketed sub-batches (challenge/split.py)
    packed: bool = False  # graphs: tokens end to end, varlen attention, one graph per token count (challenge/packed.py)
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _graph_modes(self) -> EngineSpec:
        if self.split_lengths and not self.graphs:
            raise ValueError("split_lengths runs sub-batches on captured graphs: it needs graphs=true")
        if self.packed and not (self.graphs and self.family == "static"):
            raise ValueError("packed replays the static forward's token-count graphs: it needs family static, graphs")
        if self.packed and self.device == "cuda" and self.precision not in ("fp16", "bf16"):
            raise ValueError(f"packed runs flash attention's varlen kernel: fp16 or bf16, not {self.precision!r}")
        if self.packed and self.split_lengths:
            raise ValueError("packed and split_lengths are two ways to drop padding: choose one")
        return self

    def describe(self) -> str:
        what = {"hf": "HF eager", "static": "static forward", "onnxruntime": "ONNX Runtime"}[self.family]
        parts = [what, self.precision if self.linear == "dense" else f"{self.linear} ({self.precision})"]
        if self.packed:
            parts.append(
                f"packed tokens, varlen attention, CUDA graphs per token count (rows <= {max(self.batch_sizes)})"
            )
        elif self.graphs:
            parts.append(f"CUDA graphs ({len(self.batch_sizes)} batch sizes x {len(self.length_buckets)} lengths)")
        if self.split_lengths:
            parts.append("length-bucketed sub-batches")
        return f"{self.variant}: " + ", ".join(parts)
