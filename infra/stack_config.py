"""Typed stack configuration (stacks/Pulumi.<stack>.yaml, namespace `infopt:`).

Read once at the edge: from `pulumi.Config` in `__main__` and from the YAML file in the offline plan, so both
paths validate the same model and a bad value fails naming its key (`infopt:images.vllm.digest`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML

from infopt.quantity import Quantity

PROJECT = "infopt"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


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
    """This environment's replica bounds for a deployment: each one given replaces the params value."""

    min: int | None = Field(None, ge=1)
    max: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaBounds:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        return self


class ContainerSize(_CamelConfig):
    """Requests (= limits) for the containers params does not size: artifact fetch, vLLM's gateway sidecar."""

    cpu: Quantity
    memory: Quantity


class Toleration(_CamelConfig):
    key: str
    operator: str = "Exists"
    value: str | None = None
    effect: str | None = None


EGRESS_PORT = Annotated[int, Field(ge=1, le=65535)]
CIDR = Annotated[str, Field(pattern=r"^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$")]
LABELS = dict[str, str]


class EgressRule(_CamelConfig):
    """One destination the serving pods may open connections to (a NetworkPolicy egress rule).

    Either in-cluster pods (`namespace` + `podLabels`: matched after the Service's DNAT, which is what
    Calico and Cilium evaluate, so a Service CIDR would not match) or addresses outside the cluster (`cidr`,
    minus `except`). `ports` are the destination ports as the packet leaves the pod: the pods' container
    port for in-cluster stores, 443 for S3/GCS.
    """

    namespace: str | None = None
    pod_labels: LABELS = Field(default_factory=dict)
    cidr: CIDR | None = None
    except_: list[CIDR] = Field(default_factory=list, alias="except")
    ports: list[EGRESS_PORT] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> EgressRule:
        if (self.namespace is None) == (self.cidr is None):
            raise ValueError("an egress rule names either `namespace` (+ podLabels) or `cidr` (+ except), not both")
        if self.cidr is None and self.except_:
            raise ValueError("`except` only applies to a `cidr` rule")
        return self

    def peer(self) -> dict[str, Any]:
        if self.cidr is not None:
            block: dict[str, Any] = {"cidr": self.cidr}
            if self.except_:
                block["except"] = list(self.except_)
            return {"ipBlock": block}
        peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}}}
        if self.pod_labels:
            peer["podSelector"] = {"matchLabels": dict(self.pod_labels)}
        return peer


class ArtifactStore(_CamelConfig):
    """Where the init container fetches `<baseUrl>/<sha256>.tar.gz` (s3://, gs://, https://; http:// only by
    explicit choice) and which egress the serving pods need for it."""

    base_url: Annotated[str, Field(pattern=r"^(s3|gs|https?)://\S+[^/]$")]
    allow_plain_http: bool = False  # http:// is unencrypted and unauthenticated: a deliberate dev-only choice
    region: str | None = None  # S3: the bucket's region (AWS_REGION in the fetch container)
    endpoint_url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None  # S3-compatible stores (MinIO)
    fetch_timeout_s: int = Field(300, ge=10, le=3600)  # one download; also part of the Deployment's await budget
    egress: list[EgressRule] = Field(min_length=1)

    @property
    def scheme(self) -> str:
        return self.base_url.split("://", 1)[0]

    @model_validator(mode="after")
    def _plain_http_is_explicit(self) -> ArtifactStore:
        if self.scheme == "http" and not self.allow_plain_http:
            raise ValueError(
                f"baseUrl {self.base_url!r} is plain http (no TLS, no authentication); use s3://, gs:// or "
                "https://, or set artifactStore.allowPlainHttp: true to accept it (a local dev cluster only)"
            )
        if (self.region or self.endpoint_url) and self.scheme != "s3":
            raise ValueError("region and endpointUrl only apply to an s3:// baseUrl")
        return self


class WorkloadIdentity(_CamelConfig):
    """The ServiceAccount the serving pods run as, annotated so the cloud grants it read access to the store.

    - eks: IRSA, annotation `eks.amazonaws.com/role-arn` (the role's trust policy names the ServiceAccount).
    - gke: Workload Identity, annotation `iam.gke.io/gcp-service-account`.
    - none: no annotation (EKS Pod Identity associates a role with the ServiceAccount's name outside the
      cluster; or the store needs no credentials).
    """

    provider: Literal["none", "eks", "gke"] = "none"
    service_account: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")] = "infopt-model-server"
    aws_role_arn: Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/\S+$")] | None = None
    gcp_service_account: (
        Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9-]+\.iam\.gserviceaccount\.com$")] | None
    ) = None

    @model_validator(mode="after")
    def _annotation_for_provider(self) -> WorkloadIdentity:
        if self.provider == "eks" and self.aws_role_arn is None:
            raise ValueError("provider eks needs awsRoleArn (the IAM role the pods assume through IRSA)")
        if self.provider == "gke" and self.gcp_service_account is None:
            raise ValueError("provider gke needs gcpServiceAccount (the Google service account the pods act as)")
        if self.provider != "eks" and self.aws_role_arn is not None:
            raise ValueError(f"awsRoleArn is set but provider is {self.provider!r}; it is used only with eks")
        if self.provider != "gke" and self.gcp_service_account is not None:
            raise ValueError(f"gcpServiceAccount is set but provider is {self.provider!r}; it is used only with gke")
        return self

    def annotations(self) -> dict[str, str]:
        if self.provider == "eks" and self.aws_role_arn:
            return {"eks.amazonaws.com/role-arn": self.aws_role_arn}
        if self.provider == "gke" and self.gcp_service_account:
            return {"iam.gke.io/gcp-service-account": self.gcp_service_account}
        return {}


class Dns(_CamelConfig):
    """Where the pods' DNS queries go: the cluster DNS pods, and NodeLocal DNSCache's link-local address
    (169.254.20.10 on EKS/GKE/kubeadm) that a NetworkPolicy to kube-system pods alone would block."""

    namespace: str = "kube-system"
    pod_labels: LABELS = Field(default_factory=lambda: {"k8s-app": "kube-dns"})  # CoreDNS and GKE's kube-dns
    node_local_cidrs: list[CIDR] = Field(default_factory=lambda: ["169.254.20.10/32"])


class GatewayRef(_CamelConfig):
    name: str = Field(min_length=1)
    namespace: str = Field(min_length=1)
    section_name: str | None = None  # a listener of the Gateway (e.g. "https")


class Ingress(_CamelConfig):
    """How traffic from outside reaches each deployment's gateway Service: host `<deployment>.<domain>`.

    - ingress: a networking.k8s.io/v1 Ingress of `className` (TLS from secret `<deployment>-tls` when
      `tls`, e.g. issued by cert-manager through `annotations`).
    - gatewayApi: an HTTPRoute attached to an existing Gateway (`gateway`), which terminates TLS.
    - none: no route; the Services stay cluster-internal.
    Who may connect to the gateways (NetworkPolicy), besides the monitoring namespace: pods of
    `controllerNamespace` (in-cluster proxies: ingress-nginx, Envoy Gateway, Istio) and `sourceCidrs` (cloud
    load balancers that reach pods directly, e.g. GKE's proxy-only subnet and health-check ranges).
    DNS records for the hosts come from external-dns (sources ingress / gateway-httproute) or your own zone.
    """

    mode: Literal["ingress", "gatewayApi", "none"] = "ingress"
    controller_namespace: str | None = None
    source_cidrs: list[CIDR] = Field(default_factory=list)
    domain: Annotated[str, Field(pattern=r"^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$")] | None = None
    class_name: str | None = None
    tls: bool = True
    annotations: dict[str, str] = Field(default_factory=dict)
    gateway: GatewayRef | None = None

    @model_validator(mode="after")
    def _complete(self) -> Ingress:
        if self.mode != "none" and self.domain is None:
            raise ValueError(f"mode {self.mode} needs `domain` (hosts are <deployment>.<domain>)")
        if self.mode == "ingress" and self.class_name is None:
            raise ValueError("mode ingress needs `className` (the IngressClass, e.g. nginx, alb, gce)")
        if self.mode == "gatewayApi" and self.gateway is None:
            raise ValueError("mode gatewayApi needs `gateway` (name and namespace of an existing Gateway)")
        if self.mode != "none" and self.controller_namespace is None and not self.source_cidrs:
            raise ValueError(
                f"mode {self.mode} needs `controllerNamespace` or `sourceCidrs`: the NetworkPolicy lets only "
                "them reach the gateways, so without either no request from outside would arrive"
            )
        return self

    def host(self, deployment: str) -> str:
        return f"{deployment}.{self.domain}"


class MetricsAdapter(_CamelConfig):
    """prometheus-adapter as a Helm release the program owns, with infopt's rules in its values, so the rules
    live and change with the adapter (a rules change rolls the adapter through Helm). `install: false`
    when the cluster already runs an adapter: the rules are then a stack output to add to its values."""

    install: bool = True
    release_name: str = "prometheus-adapter"
    chart_version: str = "5.3.0"  # prometheus-community/prometheus-adapter, adapter v0.12.0
    repository: str = "https://prometheus-community.github.io/helm-charts"
    prometheus_url: str = Field(min_length=1)
    prometheus_port: int = Field(9090, ge=1, le=65535)
    relist_interval: Annotated[str, Field(pattern=r"^[0-9]+(s|m)$")] = "1m"  # how often series are re-listed
    default_rules: bool = False  # the chart's default rules (resource metrics for `kubectl top`, ...)


class DeployAwait(_CamelConfig):
    """How long Pulumi waits for a Deployment's rollout (its customTimeouts), beyond fetch and start-up."""

    image_pull_s: int = Field(600, ge=0)  # vLLM images are several GB
    slack_s: int = Field(60, ge=0)


class StackConfig(_CamelConfig):
    """Everything that differs between dev, staging and prod; the rest comes from params + manifest."""

    kube_context: str = Field(min_length=1)
    kubernetes_version: Annotated[str, Field(pattern=r"^1\.[0-9]{2}$")] = "1.33"
    image_registry: str = Field(min_length=1)
    images: dict[str, Image]
    require_image_digests: bool = False  # every image by @sha256 digest (the policy pack enforces the same flag)
    high_availability: bool = False  # every deployment keeps >= 2 replicas, so a drain or rollout never empties it
    artifact_store: ArtifactStore
    workload_identity: WorkloadIdentity = WorkloadIdentity()
    dns: Dns = Dns()
    ingress: Ingress
    monitoring_namespace: str = Field(min_length=1)
    service_monitor_labels: dict[str, str] = Field(default_factory=dict)  # what Prometheus selects on
    scrape_interval: Annotated[str, Field(pattern=r"^[0-9]+(s|m)$")] = "15s"
    metrics_adapter: MetricsAdapter
    gpu_node_selector: dict[str, str] = Field(default_factory=dict)
    gpu_tolerations: list[Toleration] = Field(default_factory=list)
    # surge: a GPU rollout starts the new pod first (quota must hold max+1 GPUs); inPlace: replaces one pod
    # at a time without a spare GPU, allowed only where at least 2 replicas keep serving meanwhile.
    gpu_rollout: Literal["surge", "inPlace"] = "surge"
    topology_spread: Literal["ScheduleAnyway", "DoNotSchedule"] = "ScheduleAnyway"  # zones, then nodes
    vllm_shm_size: Quantity = "2Gi"  # /dev/shm of vLLM pods (memory-backed; counts toward the pod's memory)
    deploy_await: DeployAwait = DeployAwait()
    replica_overrides: dict[str, ReplicaBounds] = Field(default_factory=dict)
    tenants: list[str] = Field(min_length=1)
    deployments: list[str] = Field(default_factory=list)
    fetch_resources: ContainerSize = ContainerSize(cpu="250m", memory="256Mi")
    sidecar_resources: ContainerSize = ContainerSize(cpu="500m", memory="512Mi")
    default_container: ContainerSize = ContainerSize(cpu="100m", memory="128Mi")  # LimitRange default

    @model_validator(mode="after")
    def _consistent(self) -> StackConfig:
        if self.require_image_digests:
            undigested = sorted(name for name, image in self.images.items() if image.digest is None)
            if undigested:
                raise ValueError(f"requireImageDigests is true but images {undigested} have no digest")
        for key in ("tenants", "deployments"):
            names: list[str] = getattr(self, key)
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise ValueError(f"{key} lists {duplicates} more than once")
        scheme, provider = self.artifact_store.scheme, self.workload_identity.provider
        if (scheme, provider) in (("s3", "gke"), ("gs", "eks")):
            raise ValueError(
                f"artifactStore.baseUrl is {scheme}:// but workloadIdentity.provider is {provider}: "
                f"{provider} identities cannot read {scheme}:// (s3 goes with eks or none, gs with gke or none)"
            )
        return self


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{source}: {error.error_count()} invalid value(s)"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(root)"
        lines.append(f"  {PROJECT}:{where}: {item['msg']}")
    return "\n".join(lines)


def parse_stack_config(raw: dict[str, Any], source: str) -> StackConfig:
    """Validate `{key: value}` (keys without the `infopt:` prefix); raises StackConfigError naming the key."""
    try:
        return StackConfig.model_validate(raw)
    except ValidationError as error:
        raise StackConfigError(_describe(error, source)) from None


def stack_file(stack: str, stacks_dir: Path = Path("stacks")) -> Path:
    return Path(stacks_dir) / f"Pulumi.{stack}.yaml"


def load_stack_config(path: Path) -> StackConfig:
    """Read a Pulumi.<stack>.yaml file; other projects' keys (e.g. `kubernetes:`) are not ours and are skipped."""
    path = Path(path)
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
    return parse_stack_config(raw, str(path))


def _is_string(schema: dict[str, Any]) -> bool:
    options = schema.get("anyOf", [schema])
    return any(option.get("type") == "string" for option in options)


def from_pulumi_config(config: Any, known_keys: set[str], stack: str) -> StackConfig:
    """Build the model from a `pulumi.Config(PROJECT)`; `known_keys` lists every `infopt:` key that is set.

    Structured values reach the program as JSON strings and scalars as plain strings, so string fields are
    read with `get` (a version like "1.33" must stay a string) and the others with `get_object`.
    """
    properties = StackConfig.model_json_schema(by_alias=True)["properties"]
    raw: dict[str, Any] = {}
    for key in sorted(known_keys):
        schema = properties.get(key)
        if schema is None or _is_string(schema):
            raw[key] = config.get(key)  # unknown keys are forwarded so validation names them
        else:
            raw[key] = config.get_object(key)
    return parse_stack_config(raw, f"pulumi config of stack {stack} ({PROJECT}:*)")


def pulumi_config_keys() -> set[str]:
    """Every `infopt:` key set for the running stack (explicit config and the PULUMI_CONFIG bag)."""
    from pulumi.runtime.config import CONFIG, get_config_env

    prefix = f"{PROJECT}:"
    keys = set(CONFIG.get()) | set(get_config_env())
    return {key[len(prefix) :] for key in keys if key.startswith(prefix)}
