"""The tiny Llama builder: a real BPE on a real corpus, a loadable safetensors model, a chat template."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from model_builds.tiny_llama import FORTUNES_DIR, TinyLlamaError, TinyLlamaSpec, build_tiny_llama, corpus_files

SPEC = TinyLlamaSpec(vocab_size=1024, max_corpus_chars=300_000)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model", SPEC)


def test_folder_holds_safetensors_config_tokenizer_and_build_record(built: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (built / name).is_file(), name
    config = json.loads((built / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["max_position_embeddings"]) == (64, 2, 512)
    assert config["hidden_size"] // config["num_attention_heads"] == 32  # vLLM CPU attention needs >= 32
    record = json.loads((built / "infopt_build.json").read_text())
    assert record["spec"]["vocab_size"] == 1024 and record["corpus_files"] >= 1


def test_tokenizer_is_a_lossless_byte_level_bpe_with_bos(built: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(built)
    assert len(tokenizer) == 1024
    text = "Real programmers don't comment their code. ünïcode ✓"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert len(ids) < len(text.encode())  # merges learned from the corpus shorten common words


def test_chat_template_renders_roles_and_the_generation_prompt(built: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(built)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == "<|bos|><|system|>\nbe brief<|eos|>\n<|user|>\nhi<|eos|>\n<|assistant|>\n"


def test_model_loads_and_predicts_over_the_vocabulary(built: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(built).eval()
    with torch.no_grad():
        logits = model(torch.tensor([[1, 40, 41, 42]])).logits
    assert logits.shape == (1, 4, 1024)
    assert torch.isfinite(logits).all()


def test_same_seed_gives_the_same_weights(built: Path, tmp_path: Path) -> None:
    again = build_tiny_llama(tmp_path / "again", SPEC)
    assert (again / "model.safetensors").read_bytes() == (built / "model.safetensors").read_bytes()
    assert (again / "tokenizer.json").read_text() == (built / "tokenizer.json").read_text()


def test_default_corpus_is_fortunes_or_the_stdlib() -> None:
    files = corpus_files(None)
    root = FORTUNES_DIR if FORTUNES_DIR.is_dir() else Path(sysconfig.get_paths()["stdlib"])
    assert files and all(root in path.parents for path in files)
    assert not any(path.suffix in (".dat", ".u8") for path in files)


def test_bad_corpus_and_shape_name_the_value(tmp_path: Path) -> None:
    with pytest.raises(TinyLlamaError, match="neither a file nor a folder"):
        corpus_files(tmp_path / "missing")
    small = tmp_path / "small.txt"
    small.write_text("too short")
    with pytest.raises(TinyLlamaError, match="only 9 characters"):
        build_tiny_llama(tmp_path / "out", SPEC, corpus=small)
    with pytest.raises(TinyLlamaError, match="not divisible"):
        TinyLlamaSpec(hidden_size=64, num_attention_heads=3)
