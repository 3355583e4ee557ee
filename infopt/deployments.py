"""A params deployment resolved against the manifest: the one place that decides what a deployment serves.

The gateway (serving/settings.py) and the Pulumi program (infra/topology.py) both start from
`resolve_deployment`, so they agree on the variant, the artifact, the tenants, the SLA class, the batching
and the engine threads; neither re-derives them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from infopt.manifest import Artifact, LlmVariantEntry, Manifest, ManifestError, VariantEntry
from infopt.params import BatchingParams, Deployment, Params, Tenant
from infopt.quantity import cpu_threads

# Which manifest artifact each serving engine loads: vLLM reads the Hugging Face (torch) export.
ARTIFACT_ENGINE = {"onnxruntime": "onnxruntime", "torch": "torch", "vllm": "torch"}


class DeploymentError(ValueError):
    """params and manifest disagree about a deployment; the message names the deployment and the value."""


def highest_class(params: Params, tenants: Sequence[Tenant]) -> str:
    """The most demanding SLA class among `tenants` (lowest `priority`, the queue's order)."""
    return min((tenant.sla_class for tenant in tenants), key=lambda name: params.sla_classes[name].priority)


@dataclass(frozen=True)
class ResolvedDeployment:
    """What one deployment serves, for whom, and how, with every default of params applied."""

    name: str
    engine: str  # onnxruntime | torch | vllm
    tenants: tuple[Tenant, ...]
    sla_class: str  # the highest class among its tenants
    batching: BatchingParams  # the deployment's override, else serving.batching
    variant: VariantEntry | LlmVariantEntry  # an LLM variant for a vllm deployment that names one
    artifact: Artifact  # what the engine loads (vLLM: the torch export, or the LLM variant's HF folder)
    engine_threads: int  # intra-op threads: the pod's whole CPU cores (rounded up)
    gpus: int

    @property
    def shared(self) -> bool:
        return len(self.tenants) > 1


def built_llm_variant(manifest: Manifest, variant: str, engine: str, *, where: str) -> tuple[LlmVariantEntry, Artifact]:
    """An LLM variant's entry and its Hugging Face folder; only vLLM serves it."""
    assert manifest.llm is not None
    entry = manifest.llm.variant(variant)
    if engine != "vllm":
        raise DeploymentError(
            f"{where}.variant {variant!r} is an LLM variant: only engine vllm serves it, not {engine}"
        )
    if entry.status != "built":
        built = [v.name for v in manifest.llm.variants if v.status == "built"]
        raise DeploymentError(
            f"{where}.variant {variant!r} was skipped by the pipeline ({entry.skip_reason}); built LLM variants are {built}"
        )
    try:
        artifact = entry.artifact(ARTIFACT_ENGINE[engine])
    except ManifestError as error:
        raise DeploymentError(f"{where} (engine {engine}): {error}") from None
    return entry, artifact


def built_variant(
    manifest: Manifest, variant: str, engine: str, *, where: str
) -> tuple[VariantEntry | LlmVariantEntry, Artifact]:
    """The manifest entry and the artifact `engine` loads; DeploymentError prefixed with `where` otherwise.

    A name among the manifest's LLM variants resolves to that variant's Hugging Face folder (engine vllm)."""
    if manifest.llm is not None and variant in {entry.name for entry in manifest.llm.variants}:
        return built_llm_variant(manifest, variant, engine, where=where)
    try:
        entry = manifest.variant(variant)
    except ManifestError as error:
        raise DeploymentError(f"{where}.variant: {error}") from None
    if entry.status != "built":
        built = [v.name for v in manifest.variants if v.status == "built"]
        raise DeploymentError(
            f"{where}.variant {variant!r} was skipped by the pipeline ({entry.skip_reason}); built variants are {built}"
        )
    try:
        artifact = entry.artifact(ARTIFACT_ENGINE[engine])
    except ManifestError as error:
        raise DeploymentError(f"{where} (engine {engine}): {error}") from None
    return entry, artifact


def resolve_deployment(
    params: Params, manifest: Manifest, name: str, *, engine: str | None = None
) -> ResolvedDeployment:
    """The deployment `name` of params, resolved against the manifest (`engine` overrides its engine)."""
    try:
        deployment: Deployment = params.deployment(name)
    except KeyError as error:
        raise DeploymentError(str(error.args[0])) from None
    where = f"deployments[{deployment.name}]"
    engine = engine or deployment.engine
    entry, artifact = built_variant(manifest, deployment.variant, engine, where=where)
    tenants = tuple(params.tenant(tenant) for tenant in deployment.tenants)
    return ResolvedDeployment(
        name=deployment.name,
        engine=engine,
        tenants=tenants,
        sla_class=highest_class(params, tenants),
        batching=deployment.batching or params.serving.batching,
        variant=entry,
        artifact=artifact,
        engine_threads=cpu_threads(deployment.resources.cpu),
        gpus=deployment.resources.gpu,
    )


def resolve_variant(params: Params, manifest: Manifest, variant: str, engine: str) -> ResolvedDeployment:
    """An ad-hoc deployment of any built variant for every tenant (`infopt serve --variant`), with the
    serving section's batching and the benchmark's thread count."""
    if not params.tenants:
        raise DeploymentError("params.tenants is empty: nobody could call the served variant")
    entry, artifact = built_variant(manifest, variant, engine, where=f"--variant {variant}")
    tenants = tuple(params.tenants)
    return ResolvedDeployment(
        name=variant,
        engine=engine,
        tenants=tenants,
        sla_class=highest_class(params, tenants),
        batching=params.serving.batching,
        variant=entry,
        artifact=artifact,
        engine_threads=params.benchmark.threads,
        gpus=0,
    )
