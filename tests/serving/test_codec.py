"""The codec tokenizes one text and many texts identically (one text skips the batch thread pool)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serving.codec import Codec

TEXTS = ["the compiler crashed again", "a b", "politics and science at work " * 20]


def test_single_text_and_batch_encoding_give_the_same_rows_and_truncation_flags(tiny_model: Path) -> None:
    codec = Codec(tiny_model, max_seq_len=16)
    batch, batch_cut = codec.encode(TEXTS)
    singles = [codec.encode([text])[0][0] for text in TEXTS]
    released = [codec.encode([text], release_gil=True)[0][0] for text in TEXTS]
    for (batch_ids, batch_mask), (ids, mask), (free_ids, _) in zip(batch, singles, released, strict=True):
        np.testing.assert_array_equal(batch_ids, ids)
        np.testing.assert_array_equal(batch_mask, mask)
        np.testing.assert_array_equal(free_ids, ids)
    assert len(batch[2][0]) == 16  # truncated to max_seq_len either way
    assert batch_cut == [False, False, True]  # only the long text lost tokens
