"""Stage 1: labelled text -> data/prepared/{train,val,test}.jsonl, labels.json, stats.json + the tokenizer.

The default corpus is WordNet 3.0's glosses labelled by lexicographer file (model_builds/data.py). The tokenizer is trained on the TRAIN split only, so nothing about
val/test leaks into the vocabulary; with `model.pretrained` that model's own tokenizer is copied instead.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rich.console import Console

from infopt.params import DataParams, ModelParams, load_params
from infopt.paths import PREPARED_DIR, TOKENIZER_DIR
from model_builds.data import (
    FORTUNES_DIR,
    FORTUNES_LICENCE,
    SPLITS,
    WORDNET_DIR,
    WORDNET_LICENCE,
    DataError,
    load_tokenizer,
    read_fortunes,
    read_table,
    read_wordnet,
    split_examples,
    split_stats,
    train_tokenizer,
    write_jsonl,
)


def load_records(data: DataParams) -> tuple[list[tuple[str, str]], str, str]:
    """(records, source description, licence note) for the configured source."""
    if data.source == "wordnet":
        folder = Path(data.path) if data.path else WORDNET_DIR
        if not folder.is_dir():
            raise DataError(f"data.path: WordNet folder {folder} not found (install the Debian package `wordnet-base`)")
        return read_wordnet(folder, data.categories, data.max_chars), f"wordnet:{folder}", WORDNET_LICENCE
    if data.source == "fortunes":
        folder = Path(data.path) if data.path else FORTUNES_DIR
        if not folder.is_dir():
            raise DataError(f"data.path: fortune folder {folder} not found (install the Debian package `fortunes`)")
        return read_fortunes(folder, data.categories or [], data.max_chars), f"fortunes:{folder}", FORTUNES_LICENCE
    path = Path(data.path or "")
    records = read_table(path, data.source, data.text_field, data.label_field, data.max_chars)
    return records, f"{data.source}:{path}", "user-supplied data; licence as given by its owner"


def prepare(data: DataParams, model: ModelParams, seed: int, out_dir: Path, tokenizer_dir: Path) -> dict:
    """Write the splits, labels, stats and tokenizer; returns the stats written to stats.json."""
    records, source, licence = load_records(data)
    labels, splits = split_examples(
        records,
        data.max_per_class,
        data.val_fraction,
        data.test_fraction,
        seed,
        source=source,
        max_train=data.max_train,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        write_jsonl(out_dir / f"{name}.jsonl", splits[name])
    (out_dir / "labels.json").write_text(json.dumps(labels, indent=2) + "\n")

    tokenizer_dir = Path(tokenizer_dir)
    if tokenizer_dir.exists():
        shutil.rmtree(tokenizer_dir)
    if model.pretrained:
        tokenizer = load_tokenizer(Path(model.pretrained))
        tokenizer_origin = f"pretrained:{model.pretrained}"
    else:
        tokenizer = train_tokenizer([e.text for e in splits["train"]], model.vocab_size, model.max_seq_len)
        tokenizer_origin = "wordpiece trained on the train split"
    tokenizer.save_pretrained(str(tokenizer_dir))

    stats = {
        "source": source,
        "licence": licence,
        "labels": labels,
        "seed": seed,
        "counts": split_stats(splits, labels),
        "totals": {name: len(splits[name]) for name in SPLITS},
        "records_read": len(records),
        "tokenizer": {"origin": tokenizer_origin, "vocab_size": len(tokenizer)},
    }
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def main() -> None:
    params = load_params("params.yaml")
    stats = prepare(params.data, params.model, params.seed, PREPARED_DIR, TOKENIZER_DIR)
    Console().print(
        f"[bold]prepare[/]: {stats['totals']} over {len(stats['labels'])} labels from {stats['source']}; "
        f"tokenizer vocab {stats['tokenizer']['vocab_size']} -> {TOKENIZER_DIR}"
    )


if __name__ == "__main__":
    main()
