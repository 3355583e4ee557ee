"""A vLLM deployment that names an LLM variant of the manifest: planned with that variant's folder, its HPA
target from the SLA plan of the LLM's generation sweep, and the policy pack gating it on the LLM quality
decision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infopt.deployments import resolve_deployment
from infopt.manifest import Artifact, LlmManifest, LlmQuality, LlmVariantEntry, Manifest
from infopt.stats import Interval
from infra.plan import plan
from tests.infra.planning import params_with, stack_config

SHA = {"llm-fp32": "a" * 64, "llm-int8": "b" * 64, "llm-distilled": "c" * 64}


def _interval(estimate: float, low: float, high: float) -> Interval:
    return Interval(estimate=estimate, low=low, high=high, confidence=0.95)


def _entry(name: str, precision: str, within: bool | None, manifest: Manifest) -> LlmVariantEntry:
    sweeps = [
        s.model_copy(update={"engine": "torch", "shape": "generation"})
        for s in manifest.variant("int8-dynamic").sweeps
        if s.engine == "torch"
    ]
    quality = LlmQuality(
        documents=100,
        tokens=4000,
        perplexity=_interval(50.0, 48.0, 52.0),
        next_token_accuracy=_interval(0.3, 0.29, 0.31),
        perplexity_increase=None if within is None else _interval(0.01, 0.0, 0.02 if within else 0.2),
        accuracy_loss=None if within is None else _interval(0.0, -0.005, 0.005),
        within_budget=within,
    )
    artifact = Artifact(
        engine="torch", format="hf-safetensors", precision=precision,  # type: ignore[arg-type]
        path=f"artifacts/llm/variants/{name}/hf", sha256=SHA[name], size_bytes=4_000_000,
    )  # fmt: skip
    return LlmVariantEntry(
        name=name, kind="x", precision=precision, status="built", artifacts=[artifact],  # type: ignore[arg-type]
        quality=quality, sweeps=sweeps,
    )  # fmt: skip


def _with_llm(manifest: Manifest, tmp_path: Path) -> tuple[Manifest, Path]:
    llm = LlmManifest(
        model_name="tinylm",
        architecture="LlamaForCausalLM",
        max_seq_len=128,
        vocab_size=2048,
        baseline="llm-fp32",
        max_perplexity_increase=0.05,
        max_accuracy_loss=0.01,
        corpus="test",
        variants=[
            _entry("llm-fp32", "fp32", None, manifest),
            _entry("llm-int8", "int8", True, manifest),
            _entry("llm-distilled", "fp32", False, manifest),
        ],
    )
    combined = manifest.model_copy(update={"llm": llm})
    path = tmp_path / "manifest.json"
    path.write_text(combined.model_dump_json(indent=1))
    return combined, path


def _plan(raw_params: dict[str, Any], manifest: Manifest, path: Path, variant: str):
    def edit(raw: dict[str, Any]) -> None:
        raw["deployments"][0].update(
            engine="vllm",
            variant=variant,
            replicas={"min": 2, "max": 3},
            resources={"cpu": "1", "memory": "3Gi", "gpu": 0},
        )  # prod is highly available (2+ replicas); vLLM's memory must exceed /dev/shm (2Gi) within acme's quota

    return plan(params_with(raw_params, edit), manifest, stack_config("prod"), "prod")


def test_vllm_deployment_of_an_llm_variant_fetches_its_folder_and_passes_the_policies(
    raw_params: dict[str, Any], manifest: Manifest, tmp_path: Path
) -> None:
    combined, path = _with_llm(manifest, tmp_path)
    result = _plan(raw_params, combined, path, "llm-int8")
    assert result.ok, (result.violations, result.schema_errors)
    pod = {r.key: r.manifest for r in result.resources}[("Deployment", "inference-acme", "textcls-premium")]
    spec = pod["spec"]["template"]["spec"]
    vllm = spec["containers"][1]
    assert vllm["args"][:4] == ["--model", "/models/llm-int8", "--served-model-name", "llm-int8"]
    assert spec["initContainers"][0]["args"][5] == SHA["llm-int8"]  # the fetch verifies the LLM folder's hash
    hpa = {r.key: r.manifest for r in result.resources}[
        ("HorizontalPodAutoscaler", "inference-acme", "textcls-premium")
    ]
    target = hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"]

    def edit(raw: dict[str, Any]) -> None:
        raw["deployments"][0].update(
            engine="vllm",
            variant="llm-int8",
            replicas={"min": 2, "max": 3},
            resources={"cpu": "1", "memory": "3Gi", "gpu": 0},
        )

    planned = resolve_deployment(params_with(raw_params, edit), combined, "textcls-premium").sla
    assert planned is not None and target == str(planned.queue_target)


def test_an_llm_variant_outside_its_quality_budget_is_refused_by_the_policy_pack(
    raw_params: dict[str, Any], manifest: Manifest, tmp_path: Path
) -> None:
    combined, path = _with_llm(manifest, tmp_path)
    result = _plan(raw_params, combined, path, "llm-distilled")
    messages = " ".join(str(v) for v in result.violations)
    assert not result.ok and "LLM variant 'llm-distilled' is not within its quality budget" in messages
