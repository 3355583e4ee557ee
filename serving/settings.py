"""Gateway settings: one frozen dataclass, built once at the edge from params.yaml + manifest.json.

Nothing below the CLI reads params or the manifest again; every default lives in infopt/params.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infopt.manifest import Manifest
from infopt.params import BatchingParams, Params, SlaClass, Tenant

TOKENIZER_FILE = "tokenizer.json"
SHARED_TOKENIZER_DIR = Path("artifacts/tokenizer")


class SettingsError(ValueError):
    """The requested deployment/variant/engine cannot be served; the message names the value."""


@dataclass(frozen=True)
class GatewaySettings:
    model_name: str  # the name clients use in /v2/models/{name}
    variant: str
    engine: str  # onnxruntime | torch | vllm
    labels: tuple[str, ...]
    max_seq_len: int
    sla_classes: dict[str, SlaClass]
    tenants: tuple[Tenant, ...]
    batching: BatchingParams = BatchingParams()
    model_dir: Path | None = None
    tokenizer_dir: Path | None = None
    precision: str = "fp32"
    device: str = "cpu"
    engine_threads: int | None = None
    queue_capacity: int = 512
    load_balancing: str = "least_outstanding"
    engine_replicas: int = 1
    max_body_bytes: int = 1_048_576
    shutdown_grace_s: float = 10.0
    retry_after_s: float = 1.0
    vllm_urls: tuple[str, ...] = field(default_factory=tuple)
    vllm_model: str | None = None
    vllm_timeout_s: float = 60.0
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.engine == "vllm" and not self.vllm_urls:
            raise SettingsError(f"engine vllm for {self.model_name!r} needs at least one --vllm-url")
        if self.engine != "vllm" and self.model_dir is None:
            raise SettingsError(f"engine {self.engine!r} for {self.model_name!r} needs a model_dir")
        if not self.labels and self.engine != "vllm":
            raise SettingsError(f"model {self.model_name!r} has no labels")


def _tokenizer_dir(model_dir: Path, root: Path) -> Path | None:
    """The tokenizer saved with the artifact, else the pipeline's shared one, else none (token ids only)."""
    for folder in (model_dir if model_dir.is_dir() else model_dir.parent, root / SHARED_TOKENIZER_DIR):
        if (folder / TOKENIZER_FILE).is_file():
            return folder
    return None


def _resolve_device(setting: str, engine: str) -> str:
    if setting != "auto":
        return setting
    if engine == "onnxruntime":
        import onnxruntime

        return "cuda" if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def settings_from_params(
    params: Params,
    manifest: Manifest | None,
    *,
    deployment: str | None = None,
    variant: str | None = None,
    engine: str | None = None,
    model_dir: Path | None = None,
    vllm_urls: Sequence[str] = (),
    vllm_model: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    root: Path = Path("."),
) -> GatewaySettings:
    """A deployment names variant, engine, tenants and batching; otherwise --variant/--engine serve all tenants."""
    if deployment is not None:
        chosen = params.deployment(deployment)
        variant_name, engine_name = chosen.variant, engine or chosen.engine
        tenants = tuple(params.tenant(name) for name in chosen.tenants)
        batching = chosen.batching or params.serving.batching
        model_name = chosen.name
    else:
        if variant is None:
            raise SettingsError("give --deployment NAME, or --variant NAME with --engine")
        params.variant(variant)  # KeyError naming the variants when unknown
        variant_name, engine_name = variant, engine or "onnxruntime"
        tenants, batching, model_name = tuple(params.tenants), params.serving.batching, variant
    labels: tuple[str, ...] = ()
    max_seq_len = params.model.max_seq_len
    precision = "fp32"
    if engine_name != "vllm":
        if manifest is None:
            raise SettingsError(f"serving {variant_name!r} with {engine_name} needs the manifest")
        entry = manifest.variant(variant_name)
        if entry.status != "built":
            raise SettingsError(f"variant {variant_name!r} was not built: {entry.skip_reason}")
        artifact = entry.artifact(engine_name)
        precision = artifact.precision
        model_dir = model_dir or root / artifact.path
        labels, max_seq_len = tuple(manifest.labels), manifest.max_seq_len
    return GatewaySettings(
        model_name=model_name,
        variant=variant_name,
        engine=engine_name,
        labels=labels,
        max_seq_len=max_seq_len,
        sla_classes=dict(params.sla_classes),
        tenants=tenants,
        batching=batching,
        model_dir=model_dir,
        tokenizer_dir=_tokenizer_dir(model_dir, root) if model_dir is not None else None,
        precision=precision,
        device=_resolve_device(params.device, engine_name) if engine_name != "vllm" else "cpu",
        queue_capacity=params.serving.queue_capacity,
        load_balancing=params.serving.load_balancing,
        engine_replicas=params.serving.engine_replicas,
        max_body_bytes=params.serving.max_body_bytes,
        shutdown_grace_s=params.serving.shutdown_grace_s,
        vllm_urls=tuple(vllm_urls),
        vllm_model=vllm_model or variant_name,
        host=host,
        port=port,
        log_level=log_level,
    )
