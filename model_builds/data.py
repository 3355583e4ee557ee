"""Labelled text in, deterministic splits and a WordPiece tokenizer out.

Default corpus: WordNet 3.0 (Debian package `wordnet-base`, /usr/share/wordnet, WordNet 3.0 licence: see
/usr/share/doc/wordnet-base/copyright). Each synset's gloss (its definition and usage examples) is labelled
by the lexicographer file the synset belongs to: 45 supersenses such as noun.artifact or verb.motion
(lexnames(5WN)). 117,659 glosses give a test split large enough to measure a one-point accuracy loss.
Also: Debian's fortune-mod topic files (package `fortunes`, BSD licence; the category of an entry is the
name of its file), and `csv`/`jsonl` files with a text and a label field.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_LICENCE = (
    "WordNet 3.0 (Debian package `wordnet-base`), WordNet 3.0 licence; see "
    "/usr/share/doc/wordnet-base/copyright. Texts are synset glosses; labels are lexicographer files."
)
# The lexicographer files by number (the second field of every data.* line), as lexnames(5WN) lists them.
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
    "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
    "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
    "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact", "verb.creation",
    "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social", "verb.stative",
    "verb.weather", "adj.ppl",
)  # fmt: skip
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
FORTUNES_LICENCE = (
    "Debian fortune-mod topic files (package `fortunes`), BSD licence; "
    "see /usr/share/doc/fortunes/copyright. Labels are the topic file names."
)
SPLITS = ("train", "val", "test")
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MIN_PER_CLASS = 3
_OVERSTRIKE = re.compile(r".\x08")  # nroff-style bold/underline: "_\bX" -> "X"
_SPACE = re.compile(r"\s+")


class DataError(ValueError):
    """Input data is missing or unusable; the message names the file and field."""


@dataclass(frozen=True)
class Example:
    text: str
    label: int


def normalise(text: str) -> str:
    """Strip overstrike sequences and collapse all whitespace to single spaces."""
    return _SPACE.sub(" ", _OVERSTRIKE.sub("", text)).strip()


def read_fortunes(folder: Path, categories: list[str], max_chars: int) -> list[tuple[str, str]]:
    """(text, category) for every entry of the category files; entries are separated by `%` lines."""
    records: list[tuple[str, str]] = []
    for category in categories:
        path = folder / category
        if not path.is_file():
            available = sorted(p.name for p in folder.glob("*") if p.is_file() and "." not in p.name)
            raise DataError(f"data.categories: {category!r} has no fortune file {path}; available: {available}")
        raw = path.read_bytes().decode("utf-8", errors="replace")
        for entry in re.split(r"^%\s*$", raw, flags=re.MULTILINE):
            text = normalise(entry)
            if text and len(text) <= max_chars:
                records.append((text, category))
    return records


def read_wordnet(folder: Path, categories: list[str] | None, max_chars: int) -> list[tuple[str, str]]:
    """(gloss, lexicographer file) for every synset of WordNet's data.{noun,verb,adj,adv} files.

    A data line is `offset lex_filenum ss_type w_cnt word lex_id ... | gloss`; the licence header lines start
    with two spaces. `categories` keeps only those lexicographer files (None: all).
    """
    unknown = sorted(set(categories or []) - set(LEXNAMES))
    if unknown:
        raise DataError(f"data.categories: {unknown} are not WordNet lexicographer files; they are {list(LEXNAMES)}")
    wanted = set(categories) if categories else set(LEXNAMES)
    records: list[tuple[str, str]] = []
    for name in WORDNET_FILES:
        path = folder / name
        if not path.is_file():
            raise DataError(f"data.path: {path} not found (install the Debian package `wordnet-base`)")
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if not line or line.startswith("  "):
                continue
            head, bar, gloss = line.partition(" | ")
            fields = head.split()
            if not bar or len(fields) < 2 or not fields[1].isdigit() or int(fields[1]) >= len(LEXNAMES):
                raise DataError(f"{path}:{number}: not a WordNet data line (expected 'offset lex_filenum ... | gloss')")
            label = LEXNAMES[int(fields[1])]
            text = normalise(gloss)
            if label in wanted and text and len(text) <= max_chars:
                records.append((text, label))
    return records


def read_table(path: Path, source: str, text_field: str, label_field: str, max_chars: int) -> list[tuple[str, str]]:
    """(text, label) rows of a csv (header row) or jsonl file; labels are kept as strings."""
    if not path.is_file():
        raise DataError(f"data.path: {path} not found")
    rows: list[dict[str, object]]
    if source == "csv":
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or []
            for field_name, role in ((text_field, "text_field"), (label_field, "label_field")):
                if field_name not in fields:
                    raise DataError(f"{path}: data.{role} {field_name!r} is not a column; columns are {fields}")
            rows = list(reader)
    else:
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not valid JSON: {error}") from None
            for field_name, role in ((text_field, "text_field"), (label_field, "label_field")):
                if not isinstance(row, dict) or field_name not in row:
                    raise DataError(f"{path}:{number}: data.{role} {field_name!r} is missing")
            rows.append(row)
    records = []
    for row in rows:
        text = normalise(str(row[text_field] or ""))
        if text and len(text) <= max_chars:
            records.append((text, str(row[label_field])))
    return records


def split_examples(
    records: list[tuple[str, str]],
    max_per_class: int | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    source: str = "data",
    max_train: int | None = None,
) -> tuple[list[str], dict[str, list[Example]]]:
    """Dedupe, cap per class with a seeded shuffle, and split each class by the fractions (stratified);
    then, with `max_train`, keep a stratified sample of that many train examples (val/test untouched).

    A text that appears under two labels is dropped (it cannot be classified) so no text is in two splits.
    """
    labels_of: dict[str, set[str]] = {}
    for text, label in records:
        labels_of.setdefault(text, set()).add(label)
    by_label: dict[str, set[str]] = {}
    for text, label in records:
        if len(labels_of[text]) == 1:
            by_label.setdefault(label, set()).add(text)
    label_names = sorted(by_label)
    if len(label_names) < 2:
        raise DataError(f"{source}: needs at least 2 labels, found {label_names}")
    rng = random.Random(seed)
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for label_id, label in enumerate(label_names):
        texts = sorted(by_label[label])
        if len(texts) < MIN_PER_CLASS:
            raise DataError(f"{source}: label {label!r} has {len(texts)} examples; needs >= {MIN_PER_CLASS}")
        rng.shuffle(texts)
        texts = texts[:max_per_class]
        n_test = max(1, round(len(texts) * test_fraction))
        n_val = max(1, round(len(texts) * val_fraction))
        parts = {"test": texts[:n_test], "val": texts[n_test : n_test + n_val], "train": texts[n_test + n_val :]}
        for name, chunk in parts.items():
            splits[name].extend(Example(text, label_id) for text in chunk)
    for name in SPLITS:
        rng.shuffle(splits[name])
    if max_train is not None and len(splits["train"]) > max_train:  # its own generator: val/test stay identical
        subsample = random.Random(seed + 1)
        splits["train"] = stratified_sample(splits["train"], max_train, subsample)
        subsample.shuffle(splits["train"])
    return label_names, splits


def stratified_sample(examples: list[Example], size: int, rng: random.Random) -> list[Example]:
    """`size` examples with each label's share kept (largest remainders), every label at least once."""
    by_label: dict[int, list[Example]] = {}
    for example in examples:
        by_label.setdefault(example.label, []).append(example)
    quota = {label: max(1, size * len(items) / len(examples)) for label, items in by_label.items()}
    counts = {label: min(len(by_label[label]), int(share)) for label, share in quota.items()}
    for label in sorted(quota, key=lambda name: quota[name] - int(quota[name]), reverse=True):
        if sum(counts.values()) >= size:
            break
        counts[label] = min(len(by_label[label]), counts[label] + 1)
    sample: list[Example] = []
    for label in sorted(by_label):
        items = list(by_label[label])
        rng.shuffle(items)
        sample.extend(items[: counts[label]])
    return sample


def split_stats(splits: dict[str, list[Example]], labels: list[str]) -> dict[str, dict[str, int]]:
    return {
        name: {labels[label]: count for label, count in sorted(Counter(e.label for e in items).items())}
        for name, items in splits.items()
    }


def write_jsonl(path: Path, examples: list[Example]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps({"text": example.text, "label": example.label}, ensure_ascii=False) + "\n")


def read_split(data_dir: Path, split: str) -> list[Example]:
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: not found; run `python -m model_builds.prepare` first")
    return [Example(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line]


def read_labels(data_dir: Path) -> list[str]:
    path = Path(data_dir) / "labels.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; run `python -m model_builds.prepare` first")
    return list(json.loads(path.read_text()))


def train_tokenizer(texts: list[str], vocab_size: int, max_seq_len: int):  # -> BertTokenizerFast
    """A lowercase WordPiece tokenizer trained on `texts` only, wrapped for transformers; deterministic.

    The `tokenizers` WordPiece/BPE trainer gives the continuing-subword pieces ("##e") ids in hash-map order,
    and those ids break merge-count ties, so two processes learn different vocabularies from the same texts
    (huggingface/tokenizers#1794). Seeding every "##<char>" piece up front, in sorted order, fixes their ids
    before training; the model is then rebuilt from the learned vocabulary so those pieces stay ordinary
    vocabulary entries, not special tokens.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    def configured(model):  # -> Tokenizer
        tokenizer = Tokenizer(model)
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        return tokenizer

    scratch = configured(models.WordPiece(unk_token="[UNK]"))
    continuing = sorted(
        {
            f"##{char}"
            for text in texts
            for word, _ in scratch.pre_tokenizer.pre_tokenize_str(scratch.normalizer.normalize_str(text))
            for char in word[1:]
        }
    )
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=[*SPECIAL_TOKENS, *continuing], min_frequency=1, show_progress=False
    )
    scratch.train_from_iterator(texts, trainer=trainer)
    tokenizer = configured(models.WordPiece(vocab=scratch.get_vocab(), unk_token="[UNK]"))
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return BertTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_seq_len,
        do_lower_case=True,
    )


def load_tokenizer(path: Path):  # -> PreTrainedTokenizerFast
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def encode(tokenizer, texts: list[str], max_seq_len: int) -> list[list[int]]:
    """Token ids with [CLS]/[SEP], truncated to max_seq_len, unpadded (batches pad to their longest)."""
    return tokenizer(texts, truncation=True, max_length=max_seq_len, padding=False)["input_ids"]


def pad_batch(sequences: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """int64 (input_ids, attention_mask) padded on the right to the batch's longest sequence."""
    width = max(len(seq) for seq in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask
