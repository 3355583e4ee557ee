"""The one schema for params.yaml.

Every part of the project (DVC stages, gateway, Pulumi program, agent) reads params through
`load_params`, so a bad value fails once, before any work, with the field named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML

from infopt.quantity import Quantity

SlaClassName = Literal["premium", "standard", "batch"]
EngineName = Literal["torch", "onnxruntime", "vllm"]


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or invalid; the message names file and field."""


class Strict(BaseModel):
    """Base for every params section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- data
class DataParams(Strict):
    """Where the labelled text comes from and how it is split."""

    source: Literal["fortunes", "csv", "jsonl"] = "fortunes"
    path: str | None = None  # file for csv/jsonl; folder for fortunes (Debian's fortune files)
    text_field: str = "text"
    label_field: str = "label"
    categories: list[str] = Field(default_factory=lambda: ["computers", "politics", "science", "work"])
    max_per_class: int = Field(600, ge=10)  # balances classes; keeps the CPU default fast
    max_chars: int = Field(600, ge=16)  # longer fortunes are mostly ASCII art and poems
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5)

    @model_validator(mode="after")
    def _file_sources_need_path(self) -> DataParams:
        if self.source in ("csv", "jsonl") and not self.path:
            raise ValueError(f"data.path is required when data.source is {self.source!r}")
        if len(set(self.categories)) < 2 and self.source == "fortunes":
            raise ValueError("data.categories needs at least 2 distinct categories")
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
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)


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
    """Pruning followed by a short fine-tune to recover accuracy."""

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
    epochs: int = Field(6, ge=1)


class Fp8Variant(VariantBase):
    """FP8 (e4m3) weights for Hopper-class GPUs; skipped with a recorded reason elsewhere."""

    kind: Literal["fp8"] = "fp8"


Variant = Annotated[
    BaselineVariant | HalfVariant | Int8OnnxVariant | PrunedVariant | DistilledVariant | Fp8Variant,
    Field(discriminator="kind"),
]


# ----------------------------------------------------------------------------- measure
class EvaluateParams(Strict):
    max_accuracy_loss: float = Field(0.02, ge=0, le=1)  # budget vs baseline, as a fraction (0.02 = 2 points)


class BenchmarkParams(Strict):
    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 4, 8, 16, 32, 64])
    engines: list[Literal["torch", "onnxruntime"]] = Field(default_factory=lambda: ["torch", "onnxruntime"])
    warmup_iters: int = Field(3, ge=0)
    min_iters: int = Field(30, ge=5)  # enough samples for a stable p99 at small batches
    min_seconds: float = Field(0.5, gt=0)
    max_seconds: float = Field(5.0, gt=0)  # per (variant, engine, batch) cell
    threads: int = Field(2, ge=1)

    @field_validator("batch_sizes")
    @classmethod
    def _sorted_unique(cls, value: list[int]) -> list[int]:
        if sorted(set(value)) != value:
            raise ValueError(f"must be strictly increasing, got {value}")
        return value


class ProfileParams(Strict):
    batch_size: int = Field(8, ge=1)
    iters: int = Field(10, ge=1)
    top_k: int = Field(15, ge=1)


class CostParams(Strict):
    """Hourly price of the device a replica occupies; cost/1k requests = rate / throughput."""

    currency: str = "USD"
    hourly_usd: dict[Literal["cpu", "cuda"], float] = Field(default_factory=lambda: {"cpu": 0.096, "cuda": 4.0})

    @field_validator("hourly_usd")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
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
    batching: BatchingParams = BatchingParams()
    load_balancing: Literal["round_robin", "least_outstanding"] = "least_outstanding"
    engine_replicas: int = Field(1, ge=1)  # in-process engine instances per gateway
    max_body_bytes: int = Field(1_048_576, ge=1024)
    shutdown_grace_s: float = Field(10.0, ge=0)
    retry_after_s: float = Field(1.0, gt=0)  # Retry-After on 503s that say nothing more precise
    vllm_timeout_s: float = Field(60.0, gt=0)  # one upstream vLLM request, streaming included


class Quota(Strict):
    cpu: Quantity = "4"
    memory: Quantity = "8Gi"
    gpu: int = Field(0, ge=0)
    pods: int = Field(10, ge=1)


class Tenant(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")]
    sla_class: str
    rate_per_s: float = Field(gt=0)  # token bucket refill, requests per second
    burst: int = Field(ge=1)  # token bucket capacity
    tokens_per_minute: int | None = Field(None, ge=1)  # LLM token budget
    cost_center: str
    api_key_sha256: list[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(default_factory=list)
    quota: Quota = Quota()
    group: str | None = None  # identity-provider group bound to the tenant's Role; default tenant-<name>


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
    scale_up_stabilization_s: int = Field(0, ge=0)
    scale_down_stabilization_s: int = Field(300, ge=0)
    scale_up_pods_per_min: int = Field(4, ge=1)
    scale_down_percent_per_min: int = Field(50, ge=1, le=100)


class Deployment(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")]
    variant: str
    engine: EngineName = "onnxruntime"
    tenants: list[str] = Field(min_length=1)  # more than one: a shared model with isolated quotas
    replicas: Replicas = Replicas()
    resources: Resources = Resources()
    batching: BatchingParams | None = None  # overrides serving.batching for this deployment
    autoscaling: Autoscaling = Autoscaling()


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


class LlmDataParams(Strict):
    """Offline text for the causal LM: Debian's WordNet glosses/examples and fortunes, or your own file."""

    sources: list[Literal["wordnet", "fortunes", "text", "jsonl"]] = Field(
        default_factory=lambda: ["wordnet", "fortunes"], min_length=1
    )
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

    steps: int = Field(300, ge=1)
    batch_size: int = Field(16, ge=1)  # blocks of max_seq_len tokens per step
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(20, ge=0)
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
    steps: int = Field(300, ge=1)


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
    threads: int = Field(2, ge=1)

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
    vocab_size: int = Field(4096, ge=300)  # byte-level BPE trained on the corpus
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
    train: TrainParams = TrainParams()
    variants: list[Variant] = Field(min_length=1)
    evaluate: EvaluateParams = EvaluateParams()
    benchmark: BenchmarkParams = BenchmarkParams()
    profile: ProfileParams = ProfileParams()
    cost: CostParams = CostParams()
    sla_classes: dict[SlaClassName, SlaClass]
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
        tenant_names = [tenant.name for tenant in self.tenants]
        if len(set(tenant_names)) != len(tenant_names):
            raise ValueError(f"tenants: duplicate names in {tenant_names}")
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
