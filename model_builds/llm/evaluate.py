"""Stage llm_evaluate: held-out quality of every built LLM variant -> metrics/llm/quality.json.

Each variant's folder is loaded in torch (the W8A8 one through its int8 arithmetic, see quantize.py) and
scores the same test documents: per document the summed next-token NLL, the argmax hits and the token
count. From those (infopt.stats, a bootstrap over documents):
- perplexity and next-token accuracy with 95% intervals;
- for each non-baseline variant, the paired perplexity increase and accuracy loss vs the baseline on the
  same documents, and the non-inferiority decision: within budget only when BOTH upper bounds are within
  llm.evaluate.max_perplexity_increase and llm.evaluate.max_accuracy_loss.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from infopt.device import resolve_device
from infopt.params import LlmParams, load_params
from infopt.paths import LLM_DATA_DIR, LLM_TOKENIZER_DIR
from infopt.stats import (
    accuracy_interval,
    accuracy_loss_interval,
    non_inferior,
    perplexity_increase_interval,
    perplexity_interval,
)
from model_builds.llm.corpus import read_split
from model_builds.llm.modeling import DocumentScores, document_ids, load_causal_lm, load_tokenizer, score_documents
from model_builds.llm.record import QUALITY_JSON, read_builds
from model_builds.llm.tracking import log_llm_stage


def _round(interval: Any) -> dict[str, float]:
    return {key: round(value, 6) for key, value in interval.model_dump().items()}


def quality_report(
    scores: dict[str, DocumentScores], baseline: str, llm: LlmParams, seed: int
) -> dict[str, dict[str, Any]]:
    """Per variant: intervals, paired loss vs `baseline` and the decision (pure: scores in, report out)."""
    settings = {"resamples": llm.evaluate.bootstrap_resamples, "confidence": llm.evaluate.confidence, "seed": seed}
    base = scores[baseline]
    report: dict[str, dict[str, Any]] = {}
    for name, score in scores.items():
        if not (score.tokens == base.tokens).all():
            raise ValueError(f"llm variant {name!r} scored different tokens than the baseline: tokenizers differ")
        entry: dict[str, Any] = {
            "documents": len(score.tokens),
            "tokens": int(score.tokens.sum()),
            "perplexity": _round(perplexity_interval(score.nll, score.tokens, **settings)),
            "next_token_accuracy": _round(accuracy_interval(score.correct, score.tokens, **settings)),
        }
        if name != baseline:
            increase = perplexity_increase_interval(score.nll, base.nll, base.tokens, **settings)
            loss = accuracy_loss_interval(score.correct, base.correct, base.tokens, **settings)
            entry["perplexity_increase"] = _round(increase)
            entry["accuracy_loss"] = _round(loss)
            entry["within_perplexity_budget"] = non_inferior(increase, llm.evaluate.max_perplexity_increase)
            entry["within_accuracy_budget"] = non_inferior(loss, llm.evaluate.max_accuracy_loss)
            entry["within_budget"] = entry["within_perplexity_budget"] and entry["within_accuracy_budget"]
        report[name] = entry
    return report


def evaluate(llm: LlmParams, seed: int, device: str, root: Path = Path(".")) -> dict[str, Any]:
    tokenizer = load_tokenizer(root / LLM_TOKENIZER_DIR)
    documents = read_split(root / LLM_DATA_DIR, "test")[: llm.evaluate.max_documents]
    sequences = document_ids(tokenizer, documents, llm.max_seq_len)
    builds = [build for build in read_builds(llm, root) if build.status == "built"]
    scores: dict[str, DocumentScores] = {}
    seconds: dict[str, float] = {}
    architecture = "LlamaForCausalLM"
    for build in builds:
        started = time.perf_counter()
        model = load_causal_lm(root / build.artifacts[0].path)
        architecture = type(model).__name__
        scores[build.name] = score_documents(model, sequences, tokenizer.pad_token_id, llm.evaluate.batch_size, device)
        seconds[build.name] = round(time.perf_counter() - started, 2)
    if llm.baseline.name not in scores:
        raise ValueError(f"the llm baseline {llm.baseline.name!r} is not built; nothing to compare against")
    report = quality_report(scores, llm.baseline.name, llm, seed)
    for name, entry in report.items():
        entry["seconds"] = seconds[name]
    return {
        "architecture": architecture,
        "vocab_size": len(tokenizer),
        "baseline": llm.baseline.name,
        "device": device,
        "max_perplexity_increase": llm.evaluate.max_perplexity_increase,
        "max_accuracy_loss": llm.evaluate.max_accuracy_loss,
        "confidence": llm.evaluate.confidence,
        "bootstrap_resamples": llm.evaluate.bootstrap_resamples,
        "interval_method": "percentile bootstrap over documents (paired for the comparisons)",
        "variants": report,
    }


def main() -> None:
    params = load_params()
    llm = params.llm
    QUALITY_JSON.parent.mkdir(parents=True, exist_ok=True)
    if llm is None or not llm.enabled:
        QUALITY_JSON.write_text(json.dumps({"enabled": False}) + "\n")
        return
    torch.set_num_threads(llm.train.threads)
    report = evaluate(llm, params.seed, resolve_device(params.device))
    QUALITY_JSON.write_text(json.dumps(report, indent=2) + "\n")
    for name, entry in report["variants"].items():
        flat = {
            "perplexity": entry["perplexity"]["estimate"],
            "perplexity_low": entry["perplexity"]["low"],
            "perplexity_high": entry["perplexity"]["high"],
            "next_token_accuracy": entry["next_token_accuracy"]["estimate"],
            "next_token_accuracy_low": entry["next_token_accuracy"]["low"],
            "next_token_accuracy_high": entry["next_token_accuracy"]["high"],
        }
        if "perplexity_increase" in entry:
            flat.update(
                perplexity_increase_high=entry["perplexity_increase"]["high"],
                accuracy_loss=entry["accuracy_loss"]["estimate"],
                accuracy_loss_high=entry["accuracy_loss"]["high"],
                within_budget=entry["within_budget"],
            )
        log_llm_stage(params, name, "llm_evaluate", flat)
        print(name, flat)


if __name__ == "__main__":
    main()
