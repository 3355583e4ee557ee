"""The codec tokenizes one text and many texts identically, and as the tokenizer's own `encode` does (the
codec uses the batch form without offsets, even for one text)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from serving.codec import Codec

TEXTS = ["the compiler crashed again", "a b", "politics and science at work " * 20, "Café au lait"]


def test_single_text_and_batch_encoding_give_the_tokenizers_rows_and_truncation_flags(tiny_model: Path) -> None:
    codec = Codec(tiny_model, max_seq_len=16)
    reference = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    reference.no_padding()
    reference.enable_truncation(max_length=16)
    batch, batch_cut = codec.encode(TEXTS)
    singles = [codec.encode([text]) for text in TEXTS]
    for text, (batch_ids, batch_mask), (rows, cut) in zip(TEXTS, batch, singles, strict=True):
        (ids, mask), expected = rows[0], reference.encode(text)
        np.testing.assert_array_equal(batch_ids, ids)
        np.testing.assert_array_equal(batch_mask, mask)
        np.testing.assert_array_equal(ids, np.asarray(expected.ids))
        assert cut == [bool(expected.overflowing)]
    assert len(batch[2][0]) == 16  # truncated to max_seq_len either way
    assert batch_cut == [False, False, True, False]  # only the long text lost tokens
