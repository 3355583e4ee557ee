"""The LLM variant folders the pipeline writes load unchanged in a real vLLM CPU server, and vLLM's token
log-probabilities agree with the torch path the quality stage scores (so quality.json describes what is served)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import torch

from harness.vllm_process import DEFAULT_VENV, VllmProcess, VllmServerSettings, engine_cpus
from model_builds.llm.modeling import load_causal_lm, load_tokenizer
from model_builds.llm.quantize import write_w8a8
from tests.serving.vllm_fixtures import VLLM_STARTUP_TIMEOUT_S, tiny_llama_dir  # noqa: F401  (session fixture)

pytestmark = pytest.mark.vllm
PROMPT = "The cat sat on the mat because it was warm and the kettle was singing."


def _torch_logprobs(folder: Path, ids: list[int]) -> list[float]:
    model = load_causal_lm(folder)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()  # (T, V)
    logprobs = torch.log_softmax(logits, dim=-1)
    return [logprobs[position - 1, token].item() for position, token in enumerate(ids) if position > 0]


def _vllm_logprobs(folder: Path, name: str) -> tuple[list[int], list[float], str]:
    settings = VllmServerSettings(
        model=folder, served_model_name=name, startup_timeout_s=VLLM_STARTUP_TIMEOUT_S, cpus=engine_cpus()
    )
    with VllmProcess(settings) as server:
        body = {"model": name, "prompt": PROMPT, "max_tokens": 1, "echo": True, "logprobs": 0, "temperature": 0}
        answer = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=120.0).json()
        log = server.log_tail(200_000)
    tokenizer = load_tokenizer(folder)
    ids = tokenizer(PROMPT)["input_ids"]
    values = answer["choices"][0]["logprobs"]["token_logprobs"]
    return ids, [float(v) for v in values[1 : len(ids)]], log


@pytest.fixture(scope="module")
def variants(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # noqa: F811
    if not (DEFAULT_VENV / "bin" / "python").is_file():
        pytest.skip(f"{DEFAULT_VENV} is not installed: run scripts/setup_vllm.sh (CI does)")
    root = tmp_path_factory.mktemp("llm-variants")
    tokenizer = load_tokenizer(tiny_llama_dir)
    model = load_causal_lm(tiny_llama_dir)
    write_w8a8(model, tokenizer, root / "int8", ["lm_head"])
    model.to(torch.bfloat16).save_pretrained(root / "bf16")
    tokenizer.save_pretrained(root / "bf16")
    return {"int8": root / "int8", "bf16": root / "bf16"}


def test_vllm_serves_the_w8a8_folder_with_int8_kernels_and_matches_the_torch_scoring(variants: dict[str, Path]) -> None:
    ids, served, log = _vllm_logprobs(variants["int8"], "lm-int8")
    scored = _torch_logprobs(variants["int8"], ids)
    assert len(served) == len(scored) == len(ids) - 1
    assert "compressed-tensors" in log or "compressed_tensors" in log  # vLLM picked the quantization method
    diffs = [abs(a - b) for a, b in zip(served, scored, strict=True)]
    assert max(diffs) < 0.05, diffs  # the same int8 arithmetic, up to float rounding


def test_vllm_serves_the_bf16_folder_in_bf16(variants: dict[str, Path]) -> None:
    config = json.loads((variants["bf16"] / "config.json").read_text())
    assert (config.get("dtype") or config.get("torch_dtype")) == "bfloat16"
    ids, served, log = _vllm_logprobs(variants["bf16"], "lm-bf16")
    scored = _torch_logprobs(variants["bf16"], ids)  # bf16 weights, float32 compute
    assert "dtype=torch.bfloat16" in log
    diffs = [abs(a - b) for a, b in zip(served, scored, strict=True)]
    assert max(diffs) < 0.1, diffs  # bf16 activations in vLLM vs float32 here
