"""manifest.json: the contract between the pipeline and everything downstream.

The `manifest` DVC stage writes it; the gateway, the Pulumi program, the agent and the dashboard read it
through `load_manifest`. Bump SCHEMA_VERSION on any incompatible change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1


class ManifestError(ValueError):
    """manifest.json is missing, of another schema version, or does not name what was asked for."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


Precision = Literal["fp32", "fp16", "bf16", "int8", "fp8"]
Details = dict[str, float | int | str | bool | None]


class Fingerprint(_Record):
    """Where and with what a number was measured; stored in every metrics file."""

    timestamp: str
    git_sha: str
    git_dirty: bool
    hostname: str
    platform: str
    python: str
    cpu_model: str
    cpu_count: int
    memory_gb: float
    device: Literal["cpu", "cuda"]
    gpu_name: str | None = None
    gpu_count: int = 0
    cuda: str | None = None
    libraries: dict[str, str]


class Artifact(_Record):
    """One loadable file or folder of a variant, for one engine."""

    engine: Literal["torch", "onnxruntime"]
    format: Literal["hf-safetensors", "onnx"]
    precision: Precision
    path: str  # relative to the repository root
    sha256: str  # of the file, or of the sorted (relative path, file sha256) list for a folder
    size_bytes: int


class BatchPoint(_Record):
    """One measured cell of the (engine, batch size) sweep."""

    batch_size: int
    throughput_rps: float  # requests (sequences) per second
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    peak_memory_mb: float
    cost_per_1k_usd: float
    iterations: int


class SlaKnee(_Record):
    """The largest measured batch whose p99 meets the class's SLA: where throughput stops being free.

    `queue_target` is the HPA's request_queue_length target: how many requests may wait per replica
    so that queueing plus one batch still fits the SLA.
    """

    sla_class: str
    engine: str
    batch_size: int
    latency_p99_ms: float
    throughput_rps: float
    cost_per_1k_usd: float
    queue_target: int
    meets_sla: bool  # False when even batch 1 misses the SLA; the point is then the fastest one


class VariantBuild(_Record):
    """What the variants stage built for one variant (artifacts/variants/<name>/variant.json).

    The one record of a variant from build to manifest: the manifest's `VariantEntry` is this record plus
    what the measuring stages found out about it.
    """

    name: str
    kind: str
    precision: Precision
    status: Literal["built", "skipped"]
    skip_reason: str | None = None
    artifacts: list[Artifact] = Field(default_factory=list)
    parameters: int | None = None  # total parameter count of the built model
    sparsity: float | None = None  # fraction of zero weights in nn.Linear layers
    details: Details = Field(default_factory=dict)  # builder-specific facts (scalars; nested keys dotted)

    def find_artifact(self, engine: str) -> Artifact | None:
        return next((artifact for artifact in self.artifacts if artifact.engine == engine), None)

    def artifact(self, engine: str) -> Artifact:
        found = self.find_artifact(engine)
        if found is None:
            raise ManifestError(
                f"variant {self.name!r} has no artifact for engine {engine!r} "
                f"(has {[a.engine for a in self.artifacts]})"
            )
        return found


class VariantEntry(VariantBuild):
    """A variant in the manifest: its build record plus accuracy, benchmark sweeps, SLA knees and profile."""

    accuracy: float | None = None
    macro_f1: float | None = None
    accuracy_loss: float | None = None  # baseline accuracy - this accuracy, as a fraction
    within_accuracy_budget: bool | None = None
    benchmark: dict[str, list[BatchPoint]] = Field(default_factory=dict)  # engine -> sweep
    sla_knees: dict[str, SlaKnee] = Field(default_factory=dict)  # SLA class -> knee
    profile: str | None = None  # path of the profile JSON
    mlflow_run_id: str | None = None


class IntervalRecord(_Record):
    """A point estimate with its two-sided interval (infopt.llm_stats: a bootstrap over documents)."""

    estimate: float
    low: float
    high: float
    confidence: float


class LlmQuality(_Record):
    """Held-out quality of one LLM variant, and its paired comparison with the baseline on the same documents."""

    documents: int
    tokens: int
    perplexity: IntervalRecord
    next_token_accuracy: IntervalRecord
    perplexity_increase: IntervalRecord | None = None  # exp(mean NLL difference) - 1; None for the baseline
    accuracy_loss: IntervalRecord | None = None  # baseline accuracy - variant accuracy (fraction)
    within_budget: bool | None = None  # non-inferiority on both upper bounds; None for the baseline


class LlmVariantEntry(VariantBuild):
    """An LLM variant: its build record (a Hugging Face folder vLLM loads) plus quality and the in-process
    generation sweep (a BatchPoint's request = one generation of the benchmark's fixed shape)."""

    quality: LlmQuality | None = None
    benchmark: dict[str, list[BatchPoint]] = Field(default_factory=dict)  # engine -> sweep
    sla_knees: dict[str, SlaKnee] = Field(default_factory=dict)  # SLA class -> knee
    mlflow_run_id: str | None = None


class LlmManifest(_Record):
    """The causal-LM part of the manifest (optional: absent when params has no enabled `llm` section)."""

    model_name: str
    task: Literal["text-generation"] = "text-generation"
    architecture: str  # e.g. LlamaForCausalLM
    max_seq_len: int
    vocab_size: int
    baseline: str
    max_perplexity_increase: float
    max_accuracy_loss: float
    corpus: str  # sources and licences, in words
    variants: list[LlmVariantEntry]

    def variant(self, name: str) -> LlmVariantEntry:
        for entry in self.variants:
            if entry.name == name:
                return entry
        raise ManifestError(f"manifest has no LLM variant {name!r}; it has {[v.name for v in self.variants]}")


class Manifest(_Record):
    schema_version: Literal[1] = SCHEMA_VERSION
    model_name: str
    task: Literal["text-classification"] = "text-classification"
    labels: list[str]
    max_seq_len: int
    device: Literal["cpu", "cuda"]
    baseline: str
    max_accuracy_loss: float
    fingerprint: Fingerprint
    variants: list[VariantEntry]
    llm: LlmManifest | None = None  # the causal-LM variants (model_builds/llm/), when params enables them

    def variant(self, name: str) -> VariantEntry:
        for entry in self.variants:
            if entry.name == name:
                return entry
        raise ManifestError(f"manifest has no variant {name!r}; it has {[v.name for v in self.variants]}")


def load_manifest(path: str | Path = "artifacts/manifest.json") -> Manifest:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: not found; run `dvc repro` to build it")
    raw = json.loads(path.read_text())
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ManifestError(f"{path}: schema_version {version!r}, this code reads {SCHEMA_VERSION}")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as error:
        raise ManifestError(f"{path}: {error}") from None
