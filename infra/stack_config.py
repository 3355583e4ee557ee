"""Typed stack configuration (stacks/Pulumi.<stack>.yaml, namespace `infopt:`).

Read once at the edge: from `pulumi.Config` in `__main__` and from the YAML file in the offline plan, so both
paths validate the same model and a bad value fails naming its key (`infopt:images.vllm.digest`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML

from infopt.quantity import Quantity

PROJECT = "infopt"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# Stacks that must pin every image by digest whatever their file says; the policy pack uses the same list.
DIGEST_REQUIRED_STACKS = ("prod",)


class StackConfigError(ValueError):
    """The stack config file is missing or a key is invalid; the message names file and key."""


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class _CamelConfig(BaseModel):
    """Unknown keys are errors; fields are camelCase in YAML, as Pulumi config keys are."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, alias_generator=_camel)


class Image(_CamelConfig):
    """One container image; `ref` prefers the digest so what runs is what was scanned."""

    repository: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._/-]*$")]
    registry: str | None = None  # overrides the stack's imageRegistry (e.g. docker.io for vLLM)
    tag: str | None = None
    digest: str | None = None

    @field_validator("digest")
    @classmethod
    def _digest_form(cls, value: str | None) -> str | None:
        if value is not None and not DIGEST.match(value):
            raise ValueError(f"{value!r} is not an image digest (sha256:<64 hex>)")
        return value

    @model_validator(mode="after")
    def _tag_or_digest(self) -> Image:
        if self.tag is None and self.digest is None:
            raise ValueError(f"image {self.repository!r} needs a digest or a tag")
        return self

    def ref(self, default_registry: str) -> str:
        base = f"{self.registry or default_registry}/{self.repository}"
        return f"{base}@{self.digest}" if self.digest else f"{base}:{self.tag}"


class ReplicaBounds(_CamelConfig):
    """Clamp applied to a deployment's params replicas in this environment."""

    min: int | None = Field(None, ge=1)
    max: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaBounds:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        return self

    def clamp(self, value: int) -> int:
        if self.min is not None:
            value = max(value, self.min)
        if self.max is not None:
            value = min(value, self.max)
        return value


class ContainerSize(_CamelConfig):
    """Requests (= limits) for the containers params does not size: artifact fetch, vLLM's gateway sidecar."""

    cpu: Quantity
    memory: Quantity


class Toleration(_CamelConfig):
    key: str
    operator: str = "Exists"
    value: str | None = None
    effect: str | None = None


class StackConfig(_CamelConfig):
    """Everything that differs between dev, staging and prod; the rest comes from params + manifest."""

    kube_context: str = Field(min_length=1)
    kubernetes_version: Annotated[str, Field(pattern=r"^1\.[0-9]{2}$")] = "1.33"
    image_registry: str = Field(min_length=1)
    images: dict[str, Image]
    require_image_digests: bool = False
    artifact_base_url: Annotated[str, Field(pattern=r"^(https?|file)://\S+[^/]$")]
    artifact_store_cidr: Annotated[str, Field(pattern=r"^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$")]
    artifact_store_port: int = Field(ge=1, le=65535)
    ingress_namespace: str = Field(min_length=1)
    monitoring_namespace: str = Field(min_length=1)
    service_monitor_labels: dict[str, str] = Field(default_factory=dict)  # what Prometheus selects on
    scrape_interval: Annotated[str, Field(pattern=r"^[0-9]+(s|m)$")] = "15s"
    adapter_config_map: str = "infopt-prometheus-adapter"  # = the adapter chart's rules.existing
    gpu_node_selector: dict[str, str] = Field(default_factory=dict)
    gpu_tolerations: list[Toleration] = Field(default_factory=list)
    replica_overrides: dict[str, ReplicaBounds] = Field(default_factory=dict)
    tenants: list[str] = Field(min_length=1)
    deployments: list[str] = Field(default_factory=list)
    fetch_resources: ContainerSize = ContainerSize(cpu="250m", memory="256Mi")
    sidecar_resources: ContainerSize = ContainerSize(cpu="500m", memory="512Mi")
    default_container: ContainerSize = ContainerSize(cpu="100m", memory="128Mi")  # LimitRange default

    @model_validator(mode="after")
    def _digests_when_required(self) -> StackConfig:
        if self.require_image_digests:
            undigested = sorted(name for name, image in self.images.items() if image.digest is None)
            if undigested:
                raise ValueError(f"requireImageDigests is true but images {undigested} have no digest")
        return self


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{source}: {error.error_count()} invalid value(s)"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(root)"
        lines.append(f"  {PROJECT}:{where}: {item['msg']}")
    return "\n".join(lines)


def parse_stack_config(raw: dict[str, Any], source: str, stack: str) -> StackConfig:
    """Validate `{key: value}` (keys without the `infopt:` prefix); raises StackConfigError naming the key."""
    try:
        config = StackConfig.model_validate(raw)
    except ValidationError as error:
        raise StackConfigError(_describe(error, source)) from None
    if stack in DIGEST_REQUIRED_STACKS and not config.require_image_digests:
        raise StackConfigError(
            f"{source}: {PROJECT}:requireImageDigests is false, but stack {stack!r} must pin images by digest "
            f"(stacks {list(DIGEST_REQUIRED_STACKS)})"
        )
    return config


def stack_file(stack: str, stacks_dir: Path = Path("stacks")) -> Path:
    return Path(stacks_dir) / f"Pulumi.{stack}.yaml"


def load_stack_config(path: Path) -> StackConfig:
    """Read a Pulumi.<stack>.yaml file; other projects' keys (e.g. `kubernetes:`) are not ours and are skipped."""
    path = Path(path)
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    if not path.is_file():
        raise StackConfigError(f"{path}: stack config file not found")
    try:
        document = YAML(typ="safe").load(path.read_text()) or {}
    except Exception as error:  # ruamel raises many parser error types; all mean the same here
        raise StackConfigError(f"{path}: not valid YAML: {error}") from None
    config = document.get("config") or {}
    if not isinstance(config, dict):
        raise StackConfigError(f"{path}: `config` must be a mapping, got {type(config).__name__}")
    prefix = f"{PROJECT}:"
    raw = {key[len(prefix) :]: value for key, value in config.items() if key.startswith(prefix)}
    return parse_stack_config(raw, str(path), stack)


def from_pulumi_config(config: Any, known_keys: set[str], stack: str) -> StackConfig:
    """Build the model from a `pulumi.Config(PROJECT)`; `known_keys` lists every `infopt:` key that is set.

    Structured values reach the program as JSON strings and scalars as plain strings, so string fields are
    read with `get` (a version like "1.33" must stay a string) and the others with `get_object`.
    """
    fields = {field.alias or name: field for name, field in StackConfig.model_fields.items()}
    raw: dict[str, Any] = {}
    for key in sorted(known_keys):
        field = fields.get(key)
        if field is None or field.annotation in (str, str | None):
            raw[key] = config.get(key)  # unknown keys are forwarded so validation names them
        else:
            raw[key] = config.get_object(key)
    return parse_stack_config(raw, f"pulumi config of stack {stack} ({PROJECT}:*)", stack)


def pulumi_config_keys() -> set[str]:
    """Every `infopt:` key set for the running stack (explicit config and the PULUMI_CONFIG bag)."""
    from pulumi.runtime.config import CONFIG, get_config_env

    prefix = f"{PROJECT}:"
    keys = set(CONFIG.get()) | set(get_config_env())
    return {key[len(prefix) :] for key in keys if key.startswith(prefix)}
