"""The one schema for params.yaml.

Every part of the project (DVC stages, gateway, Pulumi program, agent) reads params through
`load_params`, so a bad value fails once, before any work, with the field named.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML

from infopt.quantity import Quantity, cpu_threads

SLA_CLASS_NAMES = ("premium", "standard", "batch")  # the spec's QoS classes
DEVICES = ("cpu", "cuda")
EngineName = Literal["torch", "onnxruntime", "vllm"]


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or invalid; the message names file and field."""


class Strict(BaseModel):
    """Base for every params section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- data
class DataParams(Strict):
    """Where the labelled text comes from and how it is split."""

    source: Literal["wordnet", "fortunes", "csv", "jsonl"] = "wordnet"
    path: str | None = None  # csv/jsonl: the file; wordnet/fortunes: the Debian package's folder (None: default)
    text_field: str = "text"
    label_field: str = "label"
    # wordnet: lexicographer files (None: all 45); fortunes: topic files (required); csv/jsonl: unused
    categories: list[str] | None = None
    max_per_class: int | None = Field(None, ge=10)  # cap per class before splitting; None: keep all
    max_chars: int = Field(600, ge=16)  # longer fortunes are mostly ASCII art and poems
    val_fraction: float = Field(0.02, gt=0.0, lt=0.5)  # WordNet: ~2,300 texts, for best-epoch selection
    test_fraction: float = Field(0.1, gt=0.0, lt=0.5)  # WordNet: ~11,700 texts, a 95% interval of ~±0.8 points
    # Stratified subsample of the train split (val/test untouched): the CPU preset trains on this many so a
    # cold `dvc repro` fits 10 minutes on 2 cores; None (GPU runs) trains on the whole split.
    max_train: int | None = Field(16000, ge=100)

    @model_validator(mode="after")
    def _source_needs(self) -> DataParams:
        if self.source in ("csv", "jsonl") and not self.path:
            raise ValueError(f"data.path is required when data.source is {self.source!r}")
        if self.source == "fortunes" and len(set(self.categories or [])) < 2:
            raise ValueError("data.categories needs at least 2 distinct fortune topics when data.source is 'fortunes'")
        return self


# ----------------------------------------------------------------------------- model
class ArchitectureParams(Strict):
    """BERT-family encoder dimensions; one preset per hardware class."""

    hidden_size: int = Field(ge=8)
    num_hidden_layers: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    intermediate_size: int = Field(ge=8)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ArchitectureParams:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        return self


class ModelParams(Strict):
    """The FP32 baseline ("teacher") classifier."""

    name: str = "textcls"
    preset: str = "tiny"
    presets: dict[str, ArchitectureParams]
    pretrained: str | None = None  # a local HF folder or hub id; None trains from scratch
    max_seq_len: int = Field(64, ge=8, le=4096)
    vocab_size: int = Field(8000, ge=100)  # for the locally trained WordPiece tokenizer

    @model_validator(mode="after")
    def _preset_exists(self) -> ModelParams:
        if self.preset not in self.presets:
            raise ValueError(f"model.preset {self.preset!r} is not one of {sorted(self.presets)}")
        return self

    @property
    def architecture(self) -> ArchitectureParams:
        return self.presets[self.preset]


class TrainParams(Strict):
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    # The teacher must beat the majority class on the validation split with a significant margin (the lower
    # bound of its 95% interval above the majority share), or `train` fails; False only warns (experiments).
    require_beats_majority: bool = True


class PretrainParams(Strict):
    """Masked-language-model pre-training of the encoder on offline text before fine-tuning (no model hub).

    Off on the CPU default; the GPU bert-base run turns it on so a 110M-parameter encoder learns from data.
    """

    enabled: bool = False
    corpora: list[Literal["wordnet", "fortunes"]] = ["wordnet", "fortunes"]
    max_seconds: float = Field(150.0, gt=0)  # wall-time budget; stops early at the budget
    max_steps: int = Field(4000, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(2e-4, gt=0)  # post-LN BERT diverged at 5e-4 (measured): keep it low, with warm-up
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    mask_probability: float = Field(0.15, gt=0, lt=1)


# ----------------------------------------------------------------------------- variants
class VariantBase(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$")]
    enabled: bool = True


class BaselineVariant(VariantBase):
    kind: Literal["baseline"] = "baseline"


class HalfVariant(VariantBase):
    """FP16/BF16 copy of the baseline (torch) and an FP16 ONNX export."""

    kind: Literal["half"] = "half"
    dtype: Literal["float16", "bfloat16"] = "float16"


class Int8OnnxVariant(VariantBase):
    """ONNX Runtime INT8 through optimum: dynamic, or static with calibration data."""

    kind: Literal["int8_onnx"] = "int8_onnx"
    calibration: Literal["dynamic", "static"] = "dynamic"
    per_channel: bool = True
    calibration_samples: int = Field(128, ge=8)


class PrunedVariant(VariantBase):
    """Pruning followed by a short fine-tune to recover accuracy.

    semi_structured_2_4 keeps 2 of every 4 weights and is served with torch's semi-structured sparse kernels
    (fp16, CUDA); it is built only on GPUs that have them and skipped, with the reason, elsewhere.
    """

    kind: Literal["pruned"] = "pruned"
    method: Literal["l1_unstructured", "structured_heads_ffn", "semi_structured_2_4"] = "l1_unstructured"
    amount: float = Field(0.4, gt=0.0, lt=1.0)  # fraction of weights/heads/channels removed
    finetune_epochs: int = Field(1, ge=0)


class DistilledVariant(VariantBase):
    """A smaller student trained with the KD loss of the spec on the teacher's logits."""

    kind: Literal["distilled"] = "distilled"
    student: ArchitectureParams
    temperature: float = Field(3.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1)  # weight of the KD term; 1 - alpha on the hard labels
    epochs: int = Field(3, ge=1)


class Fp8Variant(VariantBase):
    """FP8 (e4m3) weights for Hopper-class GPUs; skipped with a recorded reason elsewhere."""

    kind: Literal["fp8"] = "fp8"


Variant = Annotated[
    BaselineVariant | HalfVariant | Int8OnnxVariant | PrunedVariant | DistilledVariant | Fp8Variant,
    Field(discriminator="kind"),
]


# ----------------------------------------------------------------------------- measure
class EvaluateParams(Strict):
    """Accuracy with intervals, and the non-inferiority decision every deployment gate reads.

    A variant is within budget only when the upper bound of the confidence interval of its paired accuracy
    loss against the baseline (same test examples) is at most `max_accuracy_loss`.
    """

    max_accuracy_loss: float = Field(0.01, ge=0, le=1)  # budget vs baseline, as a fraction (0.01 = 1 point)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    bootstrap_resamples: int = Field(2000, ge=200)  # paired bootstrap of the loss and of macro-F1


class BenchmarkParams(Strict):
    """The served-shape latency sweep: real test texts, each batch padded to its longest row as the gateway
    pads it, every (variant, engine, threads, batch) cell timed `repeats` times in interleaved rounds."""

    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    # The engines the pipeline measures (evaluate and benchmark); a builder skips ONNX exports without onnxruntime.
    engines: list[Literal["torch", "onnxruntime"]] = ["torch", "onnxruntime"]
    # Intra-op thread counts to sweep on CPU: every CPU deployment's whole cores must be one of them, so its
    # SLA plan comes from a sweep measured with the threads its pod has (GPU runs use the first entry).
    threads: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 2])
    repeats: int = Field(3, ge=1)  # rounds over every cell; medians and spread are reported across rounds
    # Measure only these variants (empty: every enabled one). The agent's DVC experiments narrow a run to the
    # one cell they need (`dvc exp run -S ++benchmark.variants=[fp32] ...`); params.yaml leaves it unset.
    variants: list[str] = Field(default_factory=list)
    warmup_iters: int = Field(3, ge=0)
    min_iters: int = Field(10, ge=5)  # per round; 3 rounds give >= 30 batches per point
    min_seconds: float = Field(0.15, gt=0)  # per round and cell
    max_seconds: float = Field(1.0, gt=0)  # per round and cell

    @field_validator("batch_sizes", "threads")
    @classmethod
    def _sorted_unique(cls, value: list[int]) -> list[int]:
        if sorted(set(value)) != value:
            raise ValueError(f"must be strictly increasing, got {value}")
        return value


class ProfileParams(Strict):
    batch_size: int = Field(8, ge=1)
    iters: int = Field(10, ge=1)
    top_k: int = Field(15, ge=1)
    # Profile only these variants (empty: every built one); the agent's profiling experiments set it.
    variants: list[str] = Field(default_factory=list)


class CostParams(Strict):
    """Hourly price of the device a replica occupies; cost/1k requests = rate / throughput."""

    currency: str = "USD"
    hourly_usd: dict[str, float] = Field(default_factory=lambda: {"cpu": 0.096, "cuda": 4.0})  # device -> USD/hour

    @field_validator("hourly_usd")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(DEVICES))
        if unknown:
            raise ValueError(f"hourly_usd: unknown device(s) {unknown}; allowed: {list(DEVICES)}")
        for device, rate in value.items():
            if rate <= 0:
                raise ValueError(f"hourly_usd.{device} is {rate}; must be > 0")
        return value


# ----------------------------------------------------------------------------- serving
class SlaClass(Strict):
    """A QoS class: its latency objective, how long a request may wait, and its queue share."""

    p99_ms: float | None = Field(None, gt=0)  # None: no latency SLA (batch)
    timeout_ms: float = Field(gt=0)  # deadline from arrival; past it the request is rejected
    priority: int = Field(ge=0)  # lower is served first (vLLM convention)
    weight: int = Field(1, ge=1)  # weighted share of dequeues so lower classes are never starved
    k8s_priority_value: int = Field(ge=0, le=1_000_000_000)
    preempts: bool = False  # PreemptLowerPriority vs Never


class BatchingParams(Strict):
    mode: Literal["dynamic", "static"] = "dynamic"
    max_batch_size: int = Field(16, ge=1)
    max_wait_ms: float = Field(5.0, ge=0)  # dynamic: how long a partial batch waits to fill
    preferred_batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _preferred_fit(self) -> BatchingParams:
        too_big = [size for size in self.preferred_batch_sizes if size > self.max_batch_size]
        if too_big:
            raise ValueError(f"preferred_batch_sizes {too_big} exceed max_batch_size {self.max_batch_size}")
        return self


class ServingParams(Strict):
    queue_capacity: int = Field(512, ge=1)  # per model; beyond it requests get 503
    batching: BatchingParams = BatchingParams(preferred_batch_sizes=[4, 8, 16])
    load_balancing: Literal["round_robin", "least_outstanding"] = "least_outstanding"
    engine_replicas: int = Field(1, ge=1)  # in-process engine instances per gateway
    max_body_bytes: int = Field(1_048_576, ge=1024)
    shutdown_grace_s: float = Field(10.0, ge=0)
    retry_after_s: float = Field(1.0, gt=0)  # Retry-After on 503s that say nothing more precise
    vllm_timeout_s: float = Field(60.0, gt=0)  # one upstream vLLM request, streaming included
    # --- gateway hardening (issue #12): limits checked before authentication, per process ---
    # 16 KiB of request line + headers, h11's and Node's default: far above any legitimate client here.
    max_header_bytes: int = Field(16_384, ge=1024)
    max_header_count: int = Field(100, ge=8)  # Go's and Apache's limit on header fields
    # From the first byte of a request (or the connection's opening) to the end of its headers: a
    # slowloris connection is answered 408 and closed after this. nginx and Node use 60 s; at 10 s an
    # honest but CPU-starved Python client on the loaded 2-core box here lost connections between its
    # connect and its first byte, so 30 s.
    header_timeout_s: float = Field(30.0, gt=0)
    # Reading the whole body (max_body_bytes at most); 1 MiB needs well under a second on any link
    # that should reach an inference gateway, so 30 s is generous yet bounds a trickling client.
    body_timeout_s: float = Field(30.0, gt=0)
    # Open connections per gateway process; past it new ones get 503 + Retry-After and are closed.
    # Each idle keep-alive connection costs a few kB; 1024 covers a fleet of clients behind a Service.
    max_connections: int = Field(1024, ge=1)
    # Per-text limit, in characters. At model.max_seq_len 64 and WordPiece's 100-character cap per
    # word the encoder never sees past 6,400 characters, so 8,192 changes nothing the model reads while
    # bounding tokenizer time per text to about 10 ms. Raise it with model.max_seq_len.
    max_text_chars: int = Field(8_192, ge=16)
    # truncate: cut longer texts to max_text_chars and say so in the response ("truncated");
    # reject: answer 413 naming the text. Truncation is lossless at the defaults (see above).
    text_limit_action: Literal["truncate", "reject"] = "truncate"
    # Bodies larger than this are parsed, tokenized and their answers encoded in a worker thread, off
    # the event loop; smaller ones inline. Measured here: parsing + tokenizing a 60-character text costs
    # about one thread hand-off, 1,000 characters about eight, so 1 KiB keeps the common one-text
    # request on the loop and bounds what any request does there to a fraction of a millisecond.
    offload_body_bytes: int = Field(1_024, ge=0)
    # Replica health: this many failed batches in a row (engine error, NaN/Inf or wrong-shape logits)
    # take the replica out of rotation and, with no healthy replica left, the pod out of readiness.
    unhealthy_after_failures: int = Field(3, ge=1)
    # A batch running longer than this marks its replica hung (unhealthy) until the batch returns; the
    # slowest class's batch takes well under a second here, so 10 s is a hang, not load.
    engine_hang_s: float = Field(10.0, gt=0)
    # An unhealthy replica gets a one-row probe batch this often; a good answer brings it back.
    health_probe_interval_s: float = Field(2.0, gt=0)
    # /metrics and the model/server metadata: open (none), or only with `Authorization: Bearer <token>`
    # whose sha256 is listed here, and/or only on a separate port (see admin_port). Probes
    # (/v2/health/*) stay open for the kubelet.
    admin_token_sha256: list[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(default_factory=list)
    # A second listener on the gateway's host for /metrics, metadata and health only; when set, the
    # main port answers those admin paths with 404. None: one port for everything.
    admin_port: int | None = Field(None, ge=1, le=65535)
    # --- multi-process gateway (issue #12, overhead) ---
    # HTTP worker processes per gateway pod. 1: one process does HTTP, admission and the engine. N >= 2:
    # N workers (each on its own SO_REUSEPORT socket of the same port) do HTTP, auth, limits, parsing and
    # tokenization, and one admission process owns the buckets, the queue, the batcher, the engines and
    # the metrics, so admission stays exact. One Python event loop tops out at a few thousand requests a
    # second; size N by the pod's cores (docs/gateway.md, "Sizing serving.workers"). max_connections is
    # per worker: a pod holds workers x max_connections.
    workers: int = Field(1, ge=1, le=64)


class Quota(Strict):
    cpu: Quantity = "4"
    memory: Quantity = "8Gi"
    gpu: int = Field(0, ge=0)
    pods: int = Field(10, ge=1)


# Kubernetes names built from params (infra): a tenant's namespace `inference-<tenant>`, a shared deployment's
# `inference-shared-<deployment>`, a deployment's Service `<deployment>` (a DNS-1035 label).
SHARED_PREFIX = "shared-"  # reserved: a tenant named shared-<x> would own the namespace of shared deployment <x>
DNS_1035 = r"^[a-z]([a-z0-9-]{0,40}[a-z0-9])?$"


class Tenant(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")]
    sla_class: str
    rate_per_s: float = Field(gt=0)  # token bucket refill, requests per second
    burst: int = Field(ge=1)  # token bucket capacity
    tokens_per_minute: int | None = Field(None, ge=1)  # LLM token budget
    # What one unit of rate_per_s/burst is: a request, a row (text) of it, or a token of its rows. A
    # 16-text request costs the engine about 16 one-text requests, so rows is the default.
    charge: Literal["requests", "rows", "tokens"] = "rows"
    cost_center: str
    api_key_sha256: list[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(default_factory=list)
    quota: Quota = Quota()
    group: str | None = None  # identity-provider group bound to the tenant's Role; default tenant-<name>

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.startswith(SHARED_PREFIX):
            raise ValueError(
                f"tenant name {value!r} starts with {SHARED_PREFIX!r}, which is reserved: its namespace "
                f"inference-{value} is the one a shared deployment named {value.removeprefix(SHARED_PREFIX)!r} gets"
            )
        return value


class Resources(Strict):
    cpu: Quantity = "1"  # also the engine's thread count in the pod (whole cores, rounded up)
    memory: Quantity = "1Gi"
    gpu: int = Field(0, ge=0)


class Replicas(Strict):
    min: int = Field(1, ge=1)
    max: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        return self


class Autoscaling(Strict):
    """HPA on the gateway's request_queue_length; the target comes from the manifest's SLA knee."""

    metric: Literal["request_queue_length"] = "request_queue_length"
    # Per-pod target of the queue metrics. None: the deployment's SLA plan decides (infopt/sla.py). Required for
    # vLLM deployments, whose LLM requests have no classifier sweep to derive it from.
    queue_target: int | None = Field(None, ge=1)
    scale_up_stabilization_s: int = Field(0, ge=0)
    scale_down_stabilization_s: int = Field(300, ge=0)
    scale_up_pods_per_min: int = Field(4, ge=1)
    scale_down_percent_per_min: int = Field(50, ge=1, le=100)


class Deployment(Strict):
    name: str  # a DNS-1035 label: it names the Kubernetes Service (and Deployment, HPA, ...) of this deployment
    variant: str
    engine: EngineName = "onnxruntime"
    tenants: list[str] = Field(min_length=1)  # more than one: a shared model with isolated quotas
    replicas: Replicas = Replicas()
    resources: Resources = Resources()
    batching: BatchingParams | None = None  # overrides serving.batching for this deployment
    autoscaling: Autoscaling = Autoscaling()

    @field_validator("name")
    @classmethod
    def _dns_1035(cls, value: str) -> str:
        if not re.fullmatch(DNS_1035, value):
            raise ValueError(
                f"deployment name {value!r} is not a DNS-1035 label (lowercase letters, digits and '-', starting "
                "with a letter, ending with a letter or digit, at most 42 characters): it names a Kubernetes Service"
            )
        return value

    @field_validator("tenants")
    @classmethod
    def _unique_tenants(cls, value: list[str]) -> list[str]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"tenants {repeated} listed more than once")
        return value


class TrackingParams(Strict):
    experiment: str = "infopt"
    uri: str = "sqlite:///mlflow.db"  # MLFLOW_TRACKING_URI overrides


# ----------------------------------------------------------------------------- llm (causal LM path)
class LlmArchitecture(Strict):
    """Llama-architecture decoder dimensions. vLLM's CPU attention needs head_dim = hidden/heads >= 32."""

    hidden_size: int = Field(ge=32)
    intermediate_size: int = Field(ge=32)
    num_hidden_layers: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_key_value_heads: int = Field(ge=1)

    @model_validator(mode="after")
    def _heads_fit(self) -> LlmArchitecture:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_size // self.num_attention_heads < 32:
            raise ValueError(
                f"head_dim {self.hidden_size // self.num_attention_heads} (hidden_size / num_attention_heads) "
                "is below 32, which vLLM's CPU attention does not support"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        return self


LlmSource = Literal["wordnet", "fortunes", "text", "jsonl"]


def _default_llm_sources() -> list[LlmSource]:
    return ["wordnet", "fortunes"]


class LlmDataParams(Strict):
    """Offline text for the causal LM: Debian's WordNet glosses/examples and fortunes, or your own file."""

    sources: list[LlmSource] = Field(default_factory=_default_llm_sources, min_length=1)
    path: str | None = None  # text: paragraphs separated by blank lines; jsonl: one {"text": ...} per line
    max_documents: int = Field(24000, ge=100)  # after a seeded shuffle; keeps the CPU preset within budget
    max_chars: int = Field(600, ge=16)  # longer documents are cut (long fortunes are mostly ASCII art)
    val_fraction: float = Field(0.05, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0.0, lt=0.5)

    @model_validator(mode="after")
    def _own_text_needs_path(self) -> LlmDataParams:
        if {"text", "jsonl"} & set(self.sources) and not self.path:
            raise ValueError(f"llm.data.path is required when llm.data.sources includes text or jsonl ({self.sources})")
        return self


class LlmTrainParams(Strict):
    """Next-token training of the teacher (AdamW, linear warm-up then cosine decay)."""

    steps: int = Field(160, ge=1)
    batch_size: int = Field(8, ge=1)  # blocks of max_seq_len tokens per step
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(16, ge=0)
    threads: int = Field(1, ge=1)  # torch intra-op threads of train/variants/evaluate: on a shared 2-core box
    # two threads spin-wait on each other and ran a tiny model 7x slower than one; raise it on a dedicated host


class LlmVariantBase(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$")]
    enabled: bool = True


class LlmBaselineVariant(LlmVariantBase):
    """The teacher as trained (FP32 safetensors)."""

    kind: Literal["baseline"] = "baseline"


class LlmHalfVariant(LlmVariantBase):
    """The teacher's weights cast to BF16 or FP16 (vLLM serves it in that dtype)."""

    kind: Literal["half"] = "half"
    dtype: Literal["bfloat16", "float16"] = "bfloat16"


class LlmInt8Variant(LlmVariantBase):
    """compressed-tensors W8A8 INT8: int8 weights with one scale per output channel, activations quantized
    per token at run time (symmetric, dynamic). vLLM loads it unchanged (oneDNN kernels on x86 CPUs)."""

    kind: Literal["int8_w8a8"] = "int8_w8a8"
    ignore: list[str] = Field(default_factory=lambda: ["lm_head"])  # modules kept in full precision


class LlmDistilledVariant(LlmVariantBase):
    """A smaller student trained on the teacher's logits: alpha * KL(T) * T^2 + (1 - alpha) * next-token CE."""

    kind: Literal["distilled"] = "distilled"
    student: LlmArchitecture
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)
    steps: int = Field(160, ge=1)


LlmVariant = Annotated[
    LlmBaselineVariant | LlmHalfVariant | LlmInt8Variant | LlmDistilledVariant, Field(discriminator="kind")
]


class LlmEvaluateParams(Strict):
    """Held-out perplexity and next-token accuracy, 95% intervals by a bootstrap over documents, and the
    non-inferiority rule: a variant is within budget only when the upper bound of its paired loss vs the
    baseline is within both budgets."""

    max_documents: int = Field(1500, ge=10)  # test documents scored per variant
    bootstrap_resamples: int = Field(2000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    max_perplexity_increase: float = Field(0.05, ge=0)  # relative: 0.05 = the variant's perplexity <= 1.05x
    max_accuracy_loss: float = Field(0.01, ge=0, le=1)  # next-token accuracy, as a fraction (0.01 = 1 point)
    batch_size: int = Field(32, ge=1)


class LlmBenchmarkParams(Strict):
    """In-process (torch) static-batch generation: prefill `prompt_tokens`, then decode `output_tokens`."""

    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 4, 16])
    prompt_tokens: int = Field(32, ge=1)
    output_tokens: int = Field(16, ge=1)
    warmup_iters: int = Field(1, ge=0)
    min_iters: int = Field(5, ge=1)
    max_seconds: float = Field(3.0, gt=0)  # per (variant, batch size) cell
    threads: int = Field(1, ge=1)

    @field_validator("batch_sizes")
    @classmethod
    def _sorted_unique(cls, value: list[int]) -> list[int]:
        if sorted(set(value)) != value:
            raise ValueError(f"must be strictly increasing, got {value}")
        return value


class LlmParams(Strict):
    """The causal-LM model kind beside the classifier: corpus -> tokenizer -> teacher -> variants."""

    enabled: bool = True  # false: the llm_* stages write empty records and the manifest has no llm section
    name: str = "tinylm"
    kind: Literal["causal-lm"] = "causal-lm"
    preset: str = "tiny"
    presets: dict[str, LlmArchitecture]
    pretrained: str | None = None  # your own local HF Llama-architecture folder (with tokenizer): no training
    vocab_size: int = Field(2048, ge=300)  # byte-level BPE trained on the corpus
    max_seq_len: int = Field(128, ge=16, le=32768)  # training blocks and evaluation windows
    data: LlmDataParams = LlmDataParams()
    train: LlmTrainParams = LlmTrainParams()
    variants: list[LlmVariant] = Field(min_length=1)
    evaluate: LlmEvaluateParams = LlmEvaluateParams()
    benchmark: LlmBenchmarkParams = LlmBenchmarkParams()

    @model_validator(mode="after")
    def _consistent(self) -> LlmParams:
        if self.preset not in self.presets:
            raise ValueError(f"llm.preset {self.preset!r} is not one of {sorted(self.presets)}")
        names = [variant.name for variant in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"llm.variants: duplicate names in {names}")
        if sum(1 for variant in self.variants if variant.kind == "baseline") != 1:
            raise ValueError("llm.variants: exactly one variant must have kind 'baseline'")
        return self

    @property
    def architecture(self) -> LlmArchitecture:
        return self.presets[self.preset]

    @property
    def baseline(self) -> LlmBaselineVariant:
        return next(v for v in self.variants if isinstance(v, LlmBaselineVariant))

    def variant(self, name: str) -> LlmVariant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(f"no llm variant named {name!r}; llm.variants are {[v.name for v in self.variants]}")


# ----------------------------------------------------------------------------- root
class Params(Strict):
    seed: int = 1234
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataParams = DataParams()
    model: ModelParams
    pretrain: PretrainParams = PretrainParams()
    train: TrainParams = TrainParams()
    variants: list[Variant] = Field(min_length=1)
    evaluate: EvaluateParams = EvaluateParams()
    benchmark: BenchmarkParams = BenchmarkParams()
    profile: ProfileParams = ProfileParams()
    cost: CostParams = CostParams()
    sla_classes: dict[str, SlaClass]  # keys: premium, standard, batch
    serving: ServingParams = ServingParams()
    tenants: list[Tenant] = Field(default_factory=list)
    deployments: list[Deployment] = Field(default_factory=list)
    tracking: TrackingParams = TrackingParams()
    llm: LlmParams | None = None  # the causal-LM path (model_builds/llm/); None: no LLM stages' work

    @model_validator(mode="after")
    def _cross_references(self) -> Params:
        names = [variant.name for variant in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variants: duplicate names in {names}")
        if sum(1 for variant in self.variants if variant.kind == "baseline") != 1:
            raise ValueError("variants: exactly one variant must have kind 'baseline'")
        unknown = sorted(set(self.sla_classes) - set(SLA_CLASS_NAMES))
        if unknown:
            raise ValueError(f"sla_classes: unknown class(es) {unknown}; allowed: {list(SLA_CLASS_NAMES)}")
        ranked = sorted(self.sla_classes.items(), key=lambda item: item[1].priority)
        values = [sla.k8s_priority_value for _, sla in ranked]
        if values != sorted(values, reverse=True) or len(set(values)) != len(values):
            raise ValueError(
                "sla_classes: ordered by priority (lower first) the k8s_priority_value must strictly decrease, got "
                + ", ".join(f"{name} priority {sla.priority} -> {sla.k8s_priority_value}" for name, sla in ranked)
            )
        enabled = [variant.name for variant in self.variants if variant.enabled]
        for field, chosen in (
            ("benchmark.variants", self.benchmark.variants),
            ("profile.variants", self.profile.variants),
        ):
            unknown = sorted(set(chosen) - set(enabled))
            if unknown:
                raise ValueError(f"{field} names {unknown}: not enabled variants ({enabled})")
        tenant_names = [tenant.name for tenant in self.tenants]
        if len(set(tenant_names)) != len(tenant_names):
            raise ValueError(f"tenants: duplicate names in {tenant_names}")
        deployment_names = [deployment.name for deployment in self.deployments]
        if len(set(deployment_names)) != len(deployment_names):
            raise ValueError(f"deployments: duplicate names in {deployment_names}")
        for tenant in self.tenants:
            if tenant.sla_class not in self.sla_classes:
                raise ValueError(
                    f"tenants[{tenant.name}].sla_class {tenant.sla_class!r} is not a defined SLA class "
                    f"({sorted(self.sla_classes)})"
                )
        llm_names = [variant.name for variant in self.llm.variants] if self.llm else []
        clash = sorted(set(names) & set(llm_names))
        if clash:
            raise ValueError(f"llm.variants: names {clash} are also classifier variants; a deployment must name one")
        for deployment in self.deployments:
            if deployment.variant in llm_names and deployment.engine != "vllm":
                raise ValueError(
                    f"deployments[{deployment.name}].variant {deployment.variant!r} is an LLM variant: "
                    f"its engine must be vllm, not {deployment.engine}"
                )
            if deployment.variant not in names + llm_names:
                raise ValueError(
                    f"deployments[{deployment.name}].variant {deployment.variant!r} is not a variant "
                    f"({names + llm_names})"
                )
            unknown = [name for name in deployment.tenants if name not in tenant_names]
            if unknown:
                raise ValueError(f"deployments[{deployment.name}].tenants: unknown tenant(s) {unknown}")
            threads = cpu_threads(deployment.resources.cpu)
            if deployment.resources.gpu == 0 and deployment.engine != "vllm" and threads not in self.benchmark.threads:
                raise ValueError(
                    f"deployments[{deployment.name}].resources.cpu {deployment.resources.cpu!r} gives its engine "
                    f"{threads} thread(s), but benchmark.threads is {self.benchmark.threads}: add {threads} so its "
                    "SLA plan (batch size, HPA queue target) comes from a sweep measured with those threads"
                )
        return self

    # Lookups used by every consumer, so none re-implements them.
    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(f"no variant named {name!r}; variants are {[v.name for v in self.variants]}")

    @property
    def baseline(self) -> BaselineVariant:
        return next(v for v in self.variants if isinstance(v, BaselineVariant))

    def tenant(self, name: str) -> Tenant:
        for tenant in self.tenants:
            if tenant.name == name:
                return tenant
        raise KeyError(f"no tenant named {name!r}; tenants are {[t.name for t in self.tenants]}")

    def deployment(self, name: str) -> Deployment:
        for deployment in self.deployments:
            if deployment.name == name:
                return deployment
        raise KeyError(f"no deployment named {name!r}; deployments are {[d.name for d in self.deployments]}")


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{source}: {error.error_count()} invalid value(s)"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(root)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def parse_params(raw: object, source: str = "params.yaml") -> Params:
    """Validate an already-loaded mapping; raises ParamsError naming each bad field."""
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_describe(error, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: file not found")
    try:
        raw = YAML(typ="safe").load(path.read_text())
    except Exception as error:  # ruamel raises many parser error types; all mean the same here
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    return parse_params(raw, str(path))
