"""The LLM variants' build records and the manifest's `llm` section joined from the llm_* stages' outputs.

The manifest stage calls `llm_manifest(params, root)`; it returns None when params has no enabled `llm`
section, so a classifier-only project's manifest is unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from infopt.hashing import tree_sha256
from infopt.manifest import LlmManifest, LlmQuality, LlmVariantEntry, Sweep, VariantBuild
from infopt.params import LlmParams, Params
from infopt.paths import LLM_DATA_DIR, LLM_METRICS_DIR, LLM_VARIANTS_DIR
from infopt.stats import Interval

RECORD_FILE = "variant.json"
QUALITY_JSON = LLM_METRICS_DIR / "quality.json"
BENCHMARK_JSON = LLM_METRICS_DIR / "benchmark.json"


class LlmRecordError(ValueError):
    """An llm_* stage's output is missing or disagrees with another; the message names variant and file."""


def write_record(path: Path, build: VariantBuild) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build.model_dump_json(indent=2) + "\n")


def read_builds(llm: LlmParams, root: Path = Path(".")) -> list[VariantBuild]:
    """The records of the enabled LLM variants, in params order."""
    builds = []
    for variant in llm.variants:
        if not variant.enabled:
            continue
        path = root / LLM_VARIANTS_DIR / variant.name / RECORD_FILE
        if not path.is_file():
            raise LlmRecordError(f"llm variant {variant.name!r}: {path} not found; run the llm_variants stage")
        builds.append(VariantBuild.model_validate_json(path.read_text()))
    return builds


def _read(path: Path, stage: str) -> dict[str, Any]:
    if not path.is_file():
        raise LlmRecordError(f"{path} not found; run the {stage} stage")
    return json.loads(path.read_text())


def _interval(raw: dict[str, Any] | None) -> Interval | None:
    return Interval.model_validate(raw) if raw is not None else None


def _quality(name: str, quality: dict[str, Any]) -> LlmQuality:
    entry = quality.get("variants", {}).get(name)
    if entry is None:
        raise LlmRecordError(f"llm variant {name!r} is built but {QUALITY_JSON} has no quality for it")
    return LlmQuality(
        documents=entry["documents"],
        tokens=entry["tokens"],
        perplexity=Interval.model_validate(entry["perplexity"]),
        next_token_accuracy=Interval.model_validate(entry["next_token_accuracy"]),
        perplexity_increase=_interval(entry.get("perplexity_increase")),
        accuracy_loss=_interval(entry.get("accuracy_loss")),
        within_budget=entry.get("within_budget"),
    )


def _corpus(root: Path) -> str:
    stats_path = root / LLM_DATA_DIR / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    documents = stats.get("documents", {})
    licences = "; ".join(stats.get("licences", []))
    return f"{documents} documents; {licences}" if documents else "unknown (data/llm/stats.json missing)"


def llm_manifest(params: Params, root: Path = Path("."), run_ids: dict[str, str] | None = None) -> LlmManifest | None:
    llm = params.llm
    if llm is None or not llm.enabled:
        return None
    quality = _read(root / QUALITY_JSON, "llm_evaluate")
    benchmark = _read(root / BENCHMARK_JSON, "llm_benchmark")
    entries = []
    for build in read_builds(llm, root):
        for artifact in build.artifacts:
            actual = tree_sha256(root / artifact.path)
            if actual != artifact.sha256:
                raise LlmRecordError(
                    f"llm variant {build.name!r}: {artifact.path} has sha256 {actual}, its record says "
                    f"{artifact.sha256}; re-run the llm_variants stage"
                )
        timing = benchmark.get("variants", {}).get(build.name, {})
        details = dict(build.details)
        note = benchmark.get("engine_notes", {}).get(timing.get("engine"))
        if note:
            details[f"benchmark_note.{timing['engine']}"] = note
        entries.append(
            LlmVariantEntry(
                **build.model_dump(exclude={"details"}),
                details=details,
                quality=_quality(build.name, quality) if build.status == "built" else None,
                sweeps=[Sweep.model_validate(sweep) for sweep in timing.get("sweeps", [])],
                mlflow_run_id=(run_ids or {}).get(build.name),
            )
        )
    return LlmManifest(
        model_name=llm.name,
        architecture=quality.get("architecture", "LlamaForCausalLM"),
        max_seq_len=llm.max_seq_len,
        vocab_size=int(quality.get("vocab_size", llm.vocab_size)),
        baseline=llm.baseline.name,
        max_perplexity_increase=llm.evaluate.max_perplexity_increase,
        max_accuracy_loss=llm.evaluate.max_accuracy_loss,
        corpus=_corpus(root),
        variants=entries,
    )
