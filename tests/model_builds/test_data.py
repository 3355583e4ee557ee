from __future__ import annotations

import json
from pathlib import Path

import pytest

from infopt.params import DataParams, ModelParams
from model_builds.data import FORTUNES_DIR, DataError, load_tokenizer, read_fortunes, read_split, split_examples
from model_builds.prepare import load_records, prepare
from tests.model_builds.conftest import TINY


def test_split_is_deterministic_disjoint_and_stratified(tiny_pipeline) -> None:
    records = read_fortunes(FORTUNES_DIR, ["computers", "science"], 300)
    first = split_examples(records, 40, 0.1, 0.2, seed=7)
    again = split_examples(records, 40, 0.1, 0.2, seed=7)
    other = split_examples(records, 40, 0.1, 0.2, seed=8)
    assert first == again
    assert first[1]["train"] != other[1]["train"]
    texts = {name: {e.text for e in items} for name, items in first[1].items()}
    assert not texts["train"] & texts["val"] and not texts["train"] & texts["test"] and not texts["val"] & texts["test"]
    assert first[0] == ["computers", "science"]
    for label in (0, 1):  # 40 per class: 8 test, 4 val, 28 train
        assert [sum(e.label == label for e in first[1][s]) for s in ("train", "val", "test")] == [28, 4, 8]


def test_prepared_files_are_what_the_stage_wrote(tiny_pipeline) -> None:
    p = tiny_pipeline
    assert json.loads((p.data_dir / "labels.json").read_text()) == ["computers", "science"]
    stats = json.loads((p.data_dir / "stats.json").read_text())
    assert "BSD" in stats["licence"]
    assert stats["totals"] == {"train": 56, "val": 8, "test": 16}
    raw = {e.text for e in read_split(p.data_dir, "test")}
    fortunes = {text for text, _ in read_fortunes(FORTUNES_DIR, ["computers", "science"], 300)}
    assert raw <= fortunes  # real fortune texts, not synthetic ones


def test_tokenizer_round_trip(tiny_pipeline) -> None:
    tokenizer = load_tokenizer(tiny_pipeline.tokenizer_dir)
    encoded = tokenizer("The computer crashed again")
    assert encoded["input_ids"][0] == tokenizer.cls_token_id and encoded["input_ids"][-1] == tokenizer.sep_token_id
    assert tokenizer.decode(encoded["input_ids"], skip_special_tokens=True) == "the computer crashed again"
    assert [tokenizer.pad_token, tokenizer.unk_token, tokenizer.mask_token] == ["[PAD]", "[UNK]", "[MASK]"]


def test_csv_without_label_field_names_field_and_file(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text,category\nhello,a\n")
    with pytest.raises(DataError, match=r"data.csv.*label_field 'label'"):
        load_records(DataParams(source="csv", path=str(path)))


def test_unknown_fortune_category_is_named() -> None:
    with pytest.raises(DataError, match="'no-such-topic'"):
        load_records(DataParams(categories=["computers", "no-such-topic"]))


def test_jsonl_string_labels_and_small_class(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    rows = [{"body": f"text number {i}", "tag": "b" if i % 2 else "a"} for i in range(20)]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    model = ModelParams(presets={"t": TINY}, preset="t", vocab_size=100)
    data = DataParams(source="jsonl", path=str(path), text_field="body", label_field="tag", max_per_class=10)
    stats = prepare(data, model, 1, tmp_path / "out", tmp_path / "tok")
    assert stats["labels"] == ["a", "b"]
    path.write_text(path.read_text() + json.dumps({"body": "lonely", "tag": "c"}) + "\n")
    with pytest.raises(DataError, match="label 'c' has 1 examples"):
        prepare(data, model, 1, tmp_path / "out", tmp_path / "tok")
    path.write_text(json.dumps({"body": "no tag"}) + "\n")
    with pytest.raises(DataError, match=r"data.jsonl:1: data.label_field 'tag' is missing"):
        prepare(data, model, 1, tmp_path / "out", tmp_path / "tok")


_TOKENIZER_DIGEST = """
import hashlib, inspect, json, sys
sys.path.insert(0, {repo!r})
import argparse, asyncio, collections, email, http.client, json as js, logging, pathlib, subprocess, typing
from model_builds.data import train_tokenizer
texts = [inspect.getdoc(obj) or "" for module in (argparse, asyncio, collections, email, http.client, js, logging,
         pathlib, subprocess, typing) for _, obj in sorted(vars(module).items()) if callable(obj)]
tokenizer = train_tokenizer([t for t in texts if t], 600, 64)
print(hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest())
"""


def test_tokenizer_training_is_the_same_in_every_process() -> None:
    """Three fresh processes (three hash seeds) learn byte-identical tokenizers from the same texts."""
    import subprocess
    import sys
    from pathlib import Path

    code = _TOKENIZER_DIGEST.format(repo=str(Path(__file__).resolve().parents[2]))
    digests = {
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
        for _ in range(3)
    }
    assert len(digests) == 1, digests
