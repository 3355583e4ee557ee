from __future__ import annotations

import json
from pathlib import Path

import pytest

from infopt.params import DataParams, ModelParams
from model_builds.data import (
    FORTUNES_DIR,
    LEXNAMES,
    WORDNET_DIR,
    DataError,
    Example,
    load_tokenizer,
    read_fortunes,
    read_split,
    read_wordnet,
    split_examples,
    stratified_sample,
)
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
        load_records(DataParams(source="fortunes", categories=["computers", "no-such-topic"]))


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


WORDNET_LINES = {
    "data.noun": [
        "  1 This software and database is being provided to you, the LICENSEE, by",
        "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived or known to exist  ",
        '02084071 05 n 02 dog 0 domestic_dog 0 001 @ 02083346 n 0000 | a member of the genus Canis; "the dog barked"  ',
    ],
    "data.verb": [
        "01835496 38 v 01 travel 0 001 @ 01831531 v 0000 01 + 02 00 | change location; move, travel, or proceed  "
    ],
    "data.adj": [
        "00001740 00 a 01 able 0 001 ! 00002098 a 0101 | (usually followed by `to') having the necessary means  "
    ],
    "data.adv": ["00001740 02 r 01 barely 0 000 | by a small margin  "],
}


def write_wordnet(folder: Path, lines: dict[str, list[str]] = WORDNET_LINES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in lines.items():
        (folder / name).write_text("\n".join(rows) + "\n")
    return folder


def test_wordnet_glosses_are_labelled_by_their_lexicographer_file(tmp_path: Path) -> None:
    records = read_wordnet(write_wordnet(tmp_path / "wn"), None, 600)
    assert records == [
        ("that which is perceived or known to exist", "noun.Tops"),
        ('a member of the genus Canis; "the dog barked"', "noun.animal"),
        ("change location; move, travel, or proceed", "verb.motion"),
        ("(usually followed by `to') having the necessary means", "adj.all"),
        ("by a small margin", "adv.all"),
    ]
    only = read_wordnet(tmp_path / "wn", ["verb.motion", "adv.all"], 600)
    assert [label for _, label in only] == ["verb.motion", "adv.all"]


def test_wordnet_errors_name_the_file_line_and_category(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"\['verb.flying'\] are not WordNet lexicographer files"):
        read_wordnet(write_wordnet(tmp_path / "ok"), ["verb.flying"], 600)
    broken = write_wordnet(tmp_path / "broken", {**WORDNET_LINES, "data.adv": ["00001740 99 r 01 barely 0 000 | x"]})
    with pytest.raises(DataError, match=r"data\.adv:1: not a WordNet data line"):
        read_wordnet(broken, None, 600)
    with pytest.raises(DataError, match="install the Debian package `wordnet-base`"):
        read_wordnet(tmp_path / "missing", None, 600)


@pytest.mark.skipif(not (WORDNET_DIR / "data.noun").is_file(), reason="Debian package wordnet-base not installed")
def test_the_real_wordnet_has_117659_glosses_in_45_supersenses() -> None:
    records = read_wordnet(WORDNET_DIR, None, 10_000)
    assert len(records) == 117_659 and {label for _, label in records} == set(LEXNAMES)
    assert len(LEXNAMES) == 45


def test_stratified_sample_keeps_every_label_and_its_share() -> None:
    import random

    examples = [Example(f"a{i}", 0) for i in range(900)] + [Example(f"b{i}", 1) for i in range(90)]
    examples += [Example(f"c{i}", 2) for i in range(10)]
    sample = stratified_sample(examples, 100, random.Random(0))
    counts = [sum(e.label == label for e in sample) for label in (0, 1, 2)]
    assert sum(counts) == 100 and counts == [90, 9, 1]
    assert len({e.text for e in sample}) == 100


def test_max_train_subsamples_only_the_train_split(tmp_path: Path) -> None:
    records = [(f"text {i} {'x' * (i % 7)}", "ab"[i % 2]) for i in range(400)]
    _, full = split_examples(records, None, 0.1, 0.2, seed=1)
    _, capped = split_examples(records, None, 0.1, 0.2, seed=1, max_train=50)
    assert len(capped["train"]) == 50 and len(full["train"]) == 280
    assert capped["test"] == full["test"] and capped["val"] == full["val"]
