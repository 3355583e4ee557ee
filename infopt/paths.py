"""Where the pipeline's products live, relative to the repository root: named once, read everywhere.

dvc.yaml lists the same paths as the stages' outs; tests/test_dvc_deps.py keeps the two in step.
"""

from __future__ import annotations

from pathlib import Path

PREPARED_DIR = Path("data/prepared")  # train/val/test.jsonl + labels.json
TOKENIZER_DIR = Path("artifacts/tokenizer")  # the locally trained tokenizer every variant shares
PRETRAINED_DIR = Path("artifacts/models/pretrained")  # the MLM-pretrained encoder (stage `pretrain`)
TEACHER_DIR = Path("artifacts/models/teacher")
VARIANTS_DIR = Path("artifacts/variants")  # <variant>/variant.json + its artifact folders
MANIFEST_JSON = Path("artifacts/manifest.json")
PREDICTIONS = Path("artifacts/predictions.npz")  # evaluate: predicted label per test example, per variant.engine
METRICS_DIR = Path("metrics")
PROFILES_DIR = METRICS_DIR / "profiles"
PLOTS_DIR = Path("plots")

# The causal-LM path (model_builds/llm/): its own corpus, tokenizer, teacher and variants.
LLM_DATA_DIR = Path("data/llm")  # train/val/test.jsonl + stats.json
LLM_TOKENIZER_DIR = Path("artifacts/llm/tokenizer")
LLM_TEACHER_DIR = Path("artifacts/llm/teacher")
LLM_VARIANTS_DIR = Path("artifacts/llm/variants")  # <variant>/variant.json + <variant>/hf/
LLM_METRICS_DIR = METRICS_DIR / "llm"
