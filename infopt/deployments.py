"""A params deployment resolved against the manifest: the one place that decides what a deployment serves.

The gateway (serving/settings.py), the Pulumi program (infra/topology.py) and the agent all start from
`resolve_deployment`, so they agree on the variant, the artifact, the tenants, the SLA class, the batching,
the engine threads and the SLA plan (batch size and HPA queue target, infopt/sla.py); none re-derives them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from infopt.manifest import Artifact, LlmVariantEntry, Manifest, ManifestError, VariantEntry
from infopt.params import BatchingParams, Deployment, Params, Tenant
from infopt.quantity import cpu_threads
from infopt.sla import SlaError, SlaPlan, plan_sla

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
    sla: SlaPlan | None  # None for vLLM (an LLM engine: no classifier sweep; its HPA reads waiting requests)

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


def deployment_sla(
    params: Params,
    entry: VariantEntry | LlmVariantEntry,
    engine: str,
    sla_class: str,
    batching: BatchingParams,
    threads: int,
    gpus: int,
    *,
    where: str,
) -> SlaPlan | None:
    """The SLA plan from the sweep measured for this engine, device and thread count.

    vLLM serving a classifier variant: None (no generation sweep; params gives the HPA target). vLLM serving
    an LLM variant: the plan of its in-process generation sweep on the device (a request = one generation),
    a conservative stand-in for vLLM's own batching."""
    device = "cuda" if gpus else "cpu"
    if engine == "vllm":
        if not isinstance(entry, LlmVariantEntry):
            return None
        generation = [s for s in entry.sweeps if s.device == device]
        if not generation:
            return None
        return plan_sla(generation[0], sla_class, params.sla_classes[sla_class], batching)
    sweeps = [s for s in entry.sweeps if s.engine == engine and s.device == device]
    sweep = next((s for s in sweeps if s.threads == threads), None) or (
        sweeps[0] if device == "cuda" and sweeps else None
    )
    if sweep is None:
        measured = sorted({(s.engine, s.device, s.threads) for s in entry.sweeps})
        raise DeploymentError(
            f"{where}: variant {entry.name!r} has no {engine} sweep on {device} with {threads} thread(s); the "
            f"manifest has (engine, device, threads) {measured}. Run the pipeline where the deployment runs "
            f"(device {device}) with benchmark.threads including {threads}"
        )
    try:
        return plan_sla(sweep, sla_class, params.sla_classes[sla_class], batching)
    except SlaError as error:
        raise DeploymentError(f"{where}.batching: {error}") from None


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
    sla_class = highest_class(params, tenants)
    batching = deployment.batching or params.serving.batching
    threads, gpus = cpu_threads(deployment.resources.cpu), deployment.resources.gpu
    return ResolvedDeployment(
        name=deployment.name,
        engine=engine,
        tenants=tenants,
        sla_class=sla_class,
        batching=batching,
        variant=entry,
        artifact=artifact,
        engine_threads=threads,
        gpus=gpus,
        sla=deployment_sla(params, entry, engine, sla_class, batching, threads, gpus, where=where),
    )


def resolve_variant(params: Params, manifest: Manifest, variant: str, engine: str) -> ResolvedDeployment:
    """An ad-hoc deployment of any built variant for every tenant (`infopt serve --variant`), with the
    serving section's batching, the benchmark's largest thread count and the manifest's device."""
    if not params.tenants:
        raise DeploymentError("params.tenants is empty: nobody could call the served variant")
    where = f"--variant {variant}"
    entry, artifact = built_variant(manifest, variant, engine, where=where)
    tenants = tuple(params.tenants)
    sla_class = highest_class(params, tenants)
    batching, threads = params.serving.batching, params.benchmark.threads[-1]
    gpus = 1 if manifest.device == "cuda" else 0
    return ResolvedDeployment(
        name=variant,
        engine=engine,
        tenants=tenants,
        sla_class=sla_class,
        batching=batching,
        variant=entry,
        artifact=artifact,
        engine_threads=threads,
        gpus=gpus,
        sla=_optional_sla(params, entry, engine, sla_class, batching, threads, gpus, where=where),
    )


def _optional_sla(
    params: Params,
    entry: VariantEntry,
    engine: str,
    sla_class: str,
    batching: BatchingParams,
    threads: int,
    gpus: int,
    *,
    where: str,
) -> SlaPlan | None:
    """An ad-hoc serve needs no plan: any built variant may be served, measured for its threads or not."""
    try:
        return deployment_sla(params, entry, engine, sla_class, batching, threads, gpus, where=where)
    except DeploymentError:
        return None
