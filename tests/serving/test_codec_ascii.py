"""serving.codec.ascii_twin: printable ASCII texts skip BERT's Unicode normalizer and get the same ids and
truncation as through the tokenizer itself; other texts, and tokenizers with another normalizer, are untouched."""

from __future__ import annotations

import random
import string
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, normalizers

from serving.codec import Codec, ascii_twin
from tests.serving.gateway_kit import WORDS

MAX_SEQ_LEN = 24
OTHERS = ["Café déjà vu", "漢字 and text", "bell\x07 rings", "tab\tseparated", "the ﬁne print", "ÀÉÎÕÜ", "a\nb"]


def _reference(folder: Path) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_SEQ_LEN)
    return tokenizer


def _printable_ascii(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(1, 30))]
    noise = "".join(rng.choice(string.printable[:95]) for _ in range(rng.randint(0, 12)))  # no \t\n\r\x0b\x0c
    text = " ".join(word.upper() if rng.random() < 0.2 else word.capitalize() for word in words)
    position = rng.randint(0, len(text))
    return text[:position] + noise + text[position:]


def test_printable_ascii_and_other_texts_tokenize_as_the_tokenizer_does(tiny_model: Path) -> None:
    codec = Codec(tiny_model, max_seq_len=MAX_SEQ_LEN)
    assert codec._ascii_tokenizer is not None, "the tiny model's BERT normalizer should get its ASCII twin"
    reference = _reference(tiny_model)
    rng = random.Random(0)
    texts = [_printable_ascii(rng) for _ in range(2000)] + OTHERS
    rows, truncated = codec.encode(texts)
    singles = [codec.encode([text])[0][0] for text in texts]
    for text, (ids, mask), (one_ids, _), cut in zip(texts, rows, singles, truncated, strict=True):
        expected = reference.encode(text)
        np.testing.assert_array_equal(ids, np.asarray(expected.ids), err_msg=repr(text))
        np.testing.assert_array_equal(one_ids, ids, err_msg=repr(text))
        np.testing.assert_array_equal(mask, np.ones_like(ids))
        assert cut == bool(expected.overflowing), repr(text)
    assert any(truncated) and not all(truncated)  # the texts exercise truncation both ways


def test_a_tokenizer_without_berts_normalizer_gets_no_twin(tiny_model: Path) -> None:
    tokenizer = _reference(tiny_model)
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    assert ascii_twin(tokenizer) is None
    tokenizer.normalizer = None
    assert ascii_twin(tokenizer) is None
