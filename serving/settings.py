"""Gateway settings: one frozen dataclass, built once at the edge from params.yaml + manifest.json.

Nothing below the CLI reads params or the manifest again. Every default lives in infopt/params.py: the
serving section travels whole (`serving`), and what a deployment serves comes from
infopt.deployments.resolve_deployment, the same resolution the Pulumi program uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infopt.deployments import DeploymentError, ResolvedDeployment, resolve_deployment, resolve_variant
from infopt.device import engine_device
from infopt.manifest import Manifest
from infopt.params import BatchingParams, Params, ServingParams, SlaClass, Tenant
from infopt.paths import TOKENIZER_DIR

TOKENIZER_FILE = "tokenizer.json"


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
    batching: BatchingParams  # the deployment's, resolved
    serving: ServingParams  # queue, balancing, limits, drain: params.serving as validated
    model_dir: Path | None = None
    tokenizer_dir: Path | None = None
    precision: str = "fp32"
    device: str = "cpu"
    engine_threads: int | None = None  # None: the engine's own default
    vllm_urls: tuple[str, ...] = field(default_factory=tuple)
    vllm_model: str | None = None
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
    for folder in (model_dir if model_dir.is_dir() else model_dir.parent, root / TOKENIZER_DIR):
        if (folder / TOKENIZER_FILE).is_file():
            return folder
    return None


def _resolve(
    params: Params, manifest: Manifest | None, deployment: str | None, variant: str | None, engine: str | None
) -> tuple[str, str, tuple[Tenant, ...], BatchingParams, ResolvedDeployment | None]:
    """(model name, engine, tenants, batching, resolution); vLLM needs no manifest (it loads its own folder)."""
    if deployment is None and variant is None:
        raise SettingsError("give --deployment NAME, or --variant NAME with --engine")
    if manifest is None:
        if (engine or (deployment and params.deployment(deployment).engine)) != "vllm":
            raise SettingsError(f"serving {deployment or variant!r} with {engine or 'its engine'} needs the manifest")
        if deployment is not None:
            chosen = params.deployment(deployment)
            tenants = tuple(params.tenant(name) for name in chosen.tenants)
            return chosen.name, "vllm", tenants, chosen.batching or params.serving.batching, None
        return str(variant), "vllm", tuple(params.tenants), params.serving.batching, None
    try:
        if deployment is not None:
            resolved = resolve_deployment(params, manifest, deployment, engine=engine)
        else:
            resolved = resolve_variant(params, manifest, str(variant), engine or "onnxruntime")
    except DeploymentError as error:
        raise SettingsError(str(error)) from None
    return resolved.name, resolved.engine, resolved.tenants, resolved.batching, resolved


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
    model_name, engine_name, tenants, batching, resolved = _resolve(params, manifest, deployment, variant, engine)
    variant_name = (
        resolved.variant.name if resolved else (params.deployment(deployment).variant if deployment else str(variant))
    )
    labels: tuple[str, ...] = ()
    max_seq_len = params.model.max_seq_len
    precision, threads = "fp32", None
    if resolved is not None and engine_name != "vllm":
        assert manifest is not None  # _resolve returns a resolution only with a manifest
        precision, threads = resolved.artifact.precision, resolved.engine_threads
        model_dir = model_dir or root / resolved.artifact.path
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
        serving=params.serving,
        model_dir=model_dir,
        tokenizer_dir=_tokenizer_dir(model_dir, root) if model_dir is not None else None,
        precision=precision,
        device=engine_device(params.device, engine_name) if engine_name != "vllm" else "cpu",
        engine_threads=threads,
        vllm_urls=tuple(vllm_urls),
        vllm_model=vllm_model or variant_name,
        host=host,
        port=port,
        log_level=log_level,
    )
