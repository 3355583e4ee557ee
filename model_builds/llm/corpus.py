"""Offline text for the causal LM: documents from Debian packages or the user's own file.

- `wordnet`: Debian's `wordnet-base` (WordNet 3.0 licence, /usr/share/doc/wordnet-base/copyright): one
  document per synset, "<lemmas>: <gloss>" where the gloss holds the definition and its quoted examples.
  117,659 synsets in data.{noun,verb,adj,adv}.
- `fortunes`: Debian's `fortunes` (BSD licence): every entry of the topic files except ascii-art.
- `text`: a UTF-8 file whose documents are separated by blank lines; `jsonl`: one {"text": ...} a line.

Documents are deduplicated, shuffled with the seed and split into train/val/test by document, so no
held-out document shares text with training.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from infopt.params import LlmDataParams
from model_builds.data import FORTUNES_DIR, FORTUNES_LICENCE, normalise, read_fortunes

WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
WORDNET_LICENCE = "WordNet 3.0 licence (Princeton University), see /usr/share/doc/wordnet-base/copyright"
FORTUNE_SKIP = {"ascii-art"}  # pictures, not prose


class CorpusError(ValueError):
    """A corpus source is missing or empty; the message names the source, path and the fix."""


def read_wordnet(folder: Path = WORDNET_DIR) -> list[str]:
    """One "<lemma>, <lemma>: <gloss>" document per synset of the four data files."""
    documents: list[str] = []
    for name in WORDNET_FILES:
        path = folder / name
        if not path.is_file():
            raise CorpusError(f"llm.data.sources: wordnet file {path} not found (apt-get install wordnet-base)")
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # the licence header, or a malformed line
            fields, gloss = line.split("|", 1)
            parts = fields.split()
            count = int(parts[3], 16)  # w_cnt is hexadecimal
            lemmas = [re.sub(r"\(.*\)$", "", parts[4 + 2 * i]).replace("_", " ") for i in range(count)]
            documents.append(f"{', '.join(lemmas)}: {gloss.strip()}")
    return documents


def read_all_fortunes(folder: Path = FORTUNES_DIR, max_chars: int = 600) -> list[str]:
    if not folder.is_dir():
        raise CorpusError(f"llm.data.sources: fortune folder {folder} not found (apt-get install fortunes)")
    categories = sorted(
        path.name
        for path in folder.iterdir()
        if path.is_file() and "." not in path.name and path.name not in FORTUNE_SKIP
    )
    return [text for text, _ in read_fortunes(folder, categories, max_chars)]


def read_own(path: Path, source: str) -> list[str]:
    if not path.is_file():
        raise CorpusError(f"llm.data.path: {path} not found")
    raw = path.read_text(encoding="utf-8", errors="replace")
    if source == "text":
        return [normalise(block) for block in re.split(r"\n\s*\n", raw) if block.strip()]
    documents = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
        except (ValueError, KeyError, TypeError) as error:
            raise CorpusError(f"{path}:{number}: not a JSON object with a 'text' field ({error})") from None
        documents.append(normalise(str(text)))
    return documents


def load_documents(data: LlmDataParams) -> tuple[list[str], dict[str, int], list[str]]:
    """(documents, count per source, licence notes), deduplicated in source order, cut to max_chars."""
    documents: list[str] = []
    counts: dict[str, int] = {}
    licences: list[str] = []
    seen: set[str] = set()
    for source in data.sources:
        if source == "wordnet":
            texts, licence = read_wordnet(), WORDNET_LICENCE
        elif source == "fortunes":
            texts, licence = read_all_fortunes(max_chars=data.max_chars), FORTUNES_LICENCE
        else:
            texts, licence = (
                read_own(Path(data.path or ""), source),
                "user-supplied text; licence as given by its owner",
            )
        kept = 0
        for text in texts:
            text = text[: data.max_chars].strip()
            if text and text not in seen:
                seen.add(text)
                documents.append(text)
                kept += 1
        if not kept:
            raise CorpusError(f"llm.data.sources: {source!r} gave no documents")
        counts[source] = kept
        licences.append(f"{source}: {licence}")
    return documents, counts, licences


def split_documents(documents: list[str], data: LlmDataParams, seed: int) -> dict[str, list[str]]:
    """A seeded shuffle, cut to max_documents, then test / val / train by document."""
    shuffled = list(documents)
    random.Random(seed).shuffle(shuffled)
    shuffled = shuffled[: data.max_documents]
    n_test = max(1, round(len(shuffled) * data.test_fraction))
    n_val = max(1, round(len(shuffled) * data.val_fraction))
    if len(shuffled) - n_test - n_val < 10:
        raise CorpusError(f"only {len(shuffled)} documents: too few to train on after the val/test split")
    return {
        "test": shuffled[:n_test],
        "val": shuffled[n_test : n_test + n_val],
        "train": shuffled[n_test + n_val :],
    }


def write_split(path: Path, documents: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in documents))


def read_split(folder: Path, split: str) -> list[str]:
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        raise CorpusError(f"{path} not found; run the llm_prepare stage")
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
