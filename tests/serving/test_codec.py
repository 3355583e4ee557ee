"""The codec tokenizes one text and many texts identically (one text skips the batch thread pool)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serving.codec import Codec

TEXTS = ["the compiler crashed again", "a b", "politics and science at work " * 20]


def test_single_text_and_batch_encoding_give_the_same_rows(tiny_model: Path) -> None:
    codec = Codec(tiny_model, max_seq_len=16)
    batch = codec.encode(TEXTS)
    singles = [codec.encode([text])[0] for text in TEXTS]
    for (batch_ids, batch_mask), (ids, mask) in zip(batch, singles, strict=True):
        np.testing.assert_array_equal(batch_ids, ids)
        np.testing.assert_array_equal(batch_mask, mask)
    assert len(batch[2][0]) == 16  # truncated to max_seq_len either way
