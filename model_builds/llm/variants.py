"""Stage llm_variants: every enabled `llm.variants` entry as a standard Hugging Face folder that vLLM loads
unchanged, plus its build record -> artifacts/llm/variants/<name>/{hf/, variant.json}, metrics/llm/variants.json.

- baseline: the teacher's FP32 folder, copied.
- half: the teacher's weights in BF16 (or FP16); config.json says so and vLLM serves that dtype.
- int8_w8a8: compressed-tensors W8A8 INT8 (model_builds/llm/quantize.py).
- distilled: a smaller Llama trained on the packed train split with the KD loss on the teacher's logits
  (model_builds/llm/modeling.kd_loss).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from infopt.device import resolve_device
from infopt.hashing import tree_sha256, tree_size
from infopt.manifest import Artifact, VariantBuild
from infopt.params import (
    LlmBaselineVariant,
    LlmDistilledVariant,
    LlmHalfVariant,
    LlmInt8Variant,
    LlmParams,
    LlmVariant,
    load_params,
)
from infopt.paths import LLM_DATA_DIR, LLM_METRICS_DIR, LLM_TEACHER_DIR, LLM_VARIANTS_DIR
from model_builds.llm.modeling import (
    kd_loss,
    load_causal_lm,
    load_tokenizer,
    new_llama,
    parameter_count,
    train_causal_lm,
)
from model_builds.llm.quantize import write_w8a8
from model_builds.llm.record import RECORD_FILE, write_record
from model_builds.llm.tracking import log_llm_stage
from model_builds.llm.train import blocks_of

VARIANTS_JSON = LLM_METRICS_DIR / "variants.json"
HF_FOLDER = "hf"
PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _artifact(folder: Path, precision: str, root: Path) -> Artifact:
    return Artifact(
        engine="torch",  # a Hugging Face folder: what vLLM (and transformers) load
        format="hf-safetensors",
        precision=precision,  # type: ignore[arg-type]
        path=folder.relative_to(root).as_posix() if folder.is_absolute() else folder.as_posix(),
        sha256=tree_sha256(folder),
        size_bytes=tree_size(folder),
    )


def build_variant(
    variant: LlmVariant, llm: LlmParams, teacher_dir: Path, out_dir: Path, seed: int, device: str, root: Path
) -> VariantBuild:
    """Build one variant into out_dir/hf and return its record (not yet written)."""
    folder = out_dir / HF_FOLDER
    if folder.exists():
        shutil.rmtree(folder)
    tokenizer = load_tokenizer(teacher_dir)
    started = time.perf_counter()
    details: dict[str, Any] = {}
    if isinstance(variant, LlmBaselineVariant):
        shutil.copytree(teacher_dir, folder)
        precision, model = "fp32", load_causal_lm(folder)
    elif isinstance(variant, LlmHalfVariant):
        model = load_causal_lm(teacher_dir).to(getattr(torch, variant.dtype))
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        precision = PRECISION[variant.dtype]
    elif isinstance(variant, LlmInt8Variant):
        teacher = load_causal_lm(teacher_dir)
        counts = write_w8a8(teacher, tokenizer, folder, variant.ignore)
        details.update(
            counts, scheme="compressed-tensors W8A8 INT8: weights per channel, activations per token dynamic"
        )
        details["ignored_modules"] = ",".join(variant.ignore)
        precision, model = "int8", load_causal_lm(folder)
    elif isinstance(variant, LlmDistilledVariant):
        teacher = load_causal_lm(teacher_dir).to(device).eval()
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
        train_blocks = blocks_of("train", tokenizer, llm.max_seq_len, root / LLM_DATA_DIR)
        val_blocks = blocks_of("val", tokenizer, llm.max_seq_len, root / LLM_DATA_DIR)
        model = new_llama(variant.student, tokenizer, llm.max_seq_len, seed + 1)
        result = train_causal_lm(
            model,
            train_blocks,
            val_blocks,
            llm.train,
            steps=variant.steps,
            seed=seed,
            device=device,
            loss_fn=kd_loss(teacher, variant.temperature, variant.alpha),
        )
        model.to("cpu").save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        precision = "fp32"
        details.update(
            temperature=variant.temperature,
            alpha=variant.alpha,
            steps=variant.steps,
            train_seconds=round(result.seconds, 2),
            final_loss=result.losses[-1],
            val_loss=round(result.val_loss, 5),
            student_hidden_size=variant.student.hidden_size,
            student_layers=variant.student.num_hidden_layers,
            student_heads=variant.student.num_attention_heads,
            student_intermediate_size=variant.student.intermediate_size,
        )
    else:  # the discriminated union makes this unreachable; a new kind must get a builder
        raise TypeError(f"llm.variants: no builder for kind {variant.kind!r}")
    details["build_seconds"] = round(time.perf_counter() - started, 2)
    return VariantBuild(
        name=variant.name,
        kind=variant.kind,
        precision=precision,  # type: ignore[arg-type]
        status="built",
        artifacts=[_artifact(folder, precision, root)],
        parameters=parameter_count(model),
        details=details,
    )


def build_all(llm: LlmParams, seed: int, device: str, root: Path = Path(".")) -> list[VariantBuild]:
    variants_dir = root / LLM_VARIANTS_DIR
    if variants_dir.exists():
        shutil.rmtree(variants_dir)
    builds = []
    for variant in llm.variants:
        out_dir = variants_dir / variant.name
        out_dir.mkdir(parents=True, exist_ok=True)
        if not variant.enabled:
            build = VariantBuild(
                name=variant.name,
                kind=variant.kind,
                precision="fp32",
                status="skipped",
                skip_reason="enabled: false in params",
            )
        else:
            build = build_variant(variant, llm, root / LLM_TEACHER_DIR, out_dir, seed, device, root)
        write_record(out_dir / RECORD_FILE, build)
        builds.append(build)
        print(f"{variant.name}: {build.status} {build.details.get('build_seconds', '')}")
    return builds


def main() -> None:
    params = load_params()
    llm = params.llm
    VARIANTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    if llm is None or not llm.enabled:
        (LLM_VARIANTS_DIR).mkdir(parents=True, exist_ok=True)
        VARIANTS_JSON.write_text(json.dumps({"enabled": False}) + "\n")
        return
    torch.set_num_threads(llm.train.threads)
    builds = build_all(llm, params.seed, resolve_device(params.device))
    report = {
        build.name: {
            "status": build.status,
            "precision": build.precision,
            "parameters": build.parameters,
            "size_bytes": build.artifacts[0].size_bytes if build.artifacts else None,
            **build.details,
        }
        for build in builds
    }
    VARIANTS_JSON.write_text(json.dumps({"variants": report}, indent=2) + "\n")
    for build in builds:
        if build.status == "built":
            log_llm_stage(params, build.name, "llm_variants", report[build.name], prefix="build_")


if __name__ == "__main__":
    main()
