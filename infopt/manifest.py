"""manifest.json: the contract between the pipeline and everything downstream.

The `manifest` DVC stage writes it; the gateway, the Pulumi program, the agent and the dashboard read it
through `load_manifest`. Bump SCHEMA_VERSION on any incompatible change.

Schema 2: accuracy and macro-F1 carry confidence intervals, each variant carries its paired
non-inferiority decision against the baseline (the only thing a gate may read), and benchmark sweeps are
served-shape, per (engine, threads), with the median and spread over repeated rounds. SLA plans are not
stored: `infopt.deployments.resolve_deployment` derives each deployment's plan from these sweeps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infopt.stats import Interval

SCHEMA_VERSION = 2


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
    load_average: list[float] | None = None  # 1/5/15-minute load when measured: a shared box moves timings


class Artifact(_Record):
    """One loadable file or folder of a variant, for one engine."""

    engine: Literal["torch", "onnxruntime"]
    format: Literal["hf-safetensors", "onnx"]
    precision: Precision
    path: str  # relative to the repository root
    sha256: str  # of the file, or of the sorted (relative path, file sha256) list for a folder
    size_bytes: int


class BatchPoint(_Record):
    """One measured (engine, threads, batch size) cell: medians over the repeated rounds, and their spread.

    Each round times at least `min_iters` batches; a round's p50/p95/p99 are over its batches, and the
    point reports the median of the rounds' values with the smallest and largest round beside it.
    """

    batch_size: int
    throughput_rps: float  # median over rounds of requests (sequences) per second
    throughput_rps_min: float
    throughput_rps_max: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float  # median over rounds of the round's p99
    latency_p99_ms_min: float
    latency_p99_ms_max: float
    mean_tokens: (
        float  # mean padded width of the timed batches: the served shape (each batch padded to its longest row)
    )
    mean_attended_tokens: float | None = None  # mean unpadded tokens per request: the requests' own length
    peak_memory_mb: float
    cost_per_1k_usd: float  # at the median throughput
    iterations: int  # timed batches over all rounds
    rounds: int


class Sweep(_Record):
    """One engine's latency sweep over batch sizes with a given number of intra-op threads on one device."""

    engine: str  # torch | onnxruntime (LLM sweeps: torch, or torch-w8a8-reference, see model_builds/llm)
    threads: int
    device: Literal["cpu", "cuda"]
    shape: Literal["served", "generation"] = "served"  # classifier: real texts padded to the longest row
    points: list[BatchPoint]

    def point(self, batch_size: int) -> BatchPoint | None:
        return next((point for point in self.points if point.batch_size == batch_size), None)


class AccuracyReport(_Record):
    """Accuracy and macro-F1 of one engine's predictions on the test split, with confidence intervals."""

    engine: str
    execution_device: str
    n: int
    accuracy: Interval  # Wilson
    macro_f1: Interval  # Poisson bootstrap


class Decision(_Record):
    """The paired non-inferiority decision against the baseline, on the same test examples and engine.

    loss = baseline accuracy - variant accuracy, with its bootstrap interval; within_budget is True only when
    loss.high <= budget. Deployment gates (policy pack, agent) read `within_budget`, never a point estimate.
    """

    baseline: str
    engine: str
    loss: Interval
    mcnemar_p: float
    baseline_only: int  # examples the baseline gets right and the variant wrong
    variant_only: int
    budget: float
    within_budget: bool


class Baselines(_Record):
    """Reference classifiers on the same test split: how good the task makes a trivial and a classic model."""

    majority: Interval  # always the most frequent train label
    tfidf_logreg: Interval  # TF-IDF word+bigram features, multinomial logistic regression, fit on the train split
    majority_label: str


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
    """A variant in the manifest: its build record plus quality, the non-inferiority decision, latency sweeps
    and its profile."""

    quality: AccuracyReport | None = None  # the primary engine's (onnxruntime where shipped, else torch)
    quality_by_engine: dict[str, AccuracyReport] = Field(default_factory=dict)
    decision: Decision | None = None  # None for the baseline itself and for skipped variants
    sweeps: list[Sweep] = Field(default_factory=list)
    profile: str | None = None  # path of the profile JSON
    mlflow_run_id: str | None = None

    @property
    def deployable(self) -> bool:
        """Built and non-inferior to the baseline (the baseline is deployable by definition)."""
        return self.status == "built" and (self.decision is None or self.decision.within_budget)

    def sweep(self, engine: str, threads: int, device: str) -> Sweep | None:
        return next(
            (s for s in self.sweeps if s.engine == engine and s.threads == threads and s.device == device), None
        )


class LlmQuality(_Record):
    """Held-out quality of one LLM variant, and its paired comparison with the baseline on the same documents."""

    documents: int
    tokens: int
    perplexity: Interval
    next_token_accuracy: Interval
    perplexity_increase: Interval | None = None  # exp(mean NLL difference) - 1; None for the baseline
    accuracy_loss: Interval | None = None  # baseline accuracy - variant accuracy (fraction)
    within_budget: bool | None = None  # non-inferiority on both upper bounds; None for the baseline


class LlmVariantEntry(VariantBuild):
    """An LLM variant: its build record (a Hugging Face folder vLLM loads) plus quality and the in-process
    generation sweep (a BatchPoint's request = one generation of the benchmark's fixed shape)."""

    quality: LlmQuality | None = None
    sweeps: list[Sweep] = Field(default_factory=list)  # in-process generation; a request = one generation
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
    schema_version: Literal[2] = 2
    model_name: str
    task: Literal["text-classification"] = "text-classification"
    labels: list[str]
    max_seq_len: int
    device: Literal["cpu", "cuda"]
    baseline: str
    max_accuracy_loss: float
    baselines: Baselines
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
    return parse_manifest(path.read_text(), str(path))


def parse_manifest(text: str, where: str) -> Manifest:
    """A manifest from its JSON text (a file, or one read from a DVC experiment); `where` names it in errors."""
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise ManifestError(f"{where}: not JSON ({error})") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise ManifestError(f"{where}: schema_version {version!r}, this code reads {SCHEMA_VERSION}")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as error:
        raise ManifestError(f"{where}: {error}") from None
