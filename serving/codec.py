"""Text -> token rows with the variant's own tokenizer, and rows -> one padded (B, T) batch.

Rows stay unpadded in the queue; a batch is padded to its longest row (at most max_seq_len), so short
requests do not pay for max_seq_len columns. `encode` reports which texts were truncated (to
max_seq_len tokens by the tokenizer, or earlier to the per-text character limit by the caller), so the
response can say so. Texts are tokenized with the batch form without character offsets
(`encode_batch_fast`, nothing here reads offsets), even one text: it is the quicker form, and it releases
the GIL, so a large body tokenized off the event loop (serving/app.py) lets the loop run meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import BadRequest

Row = tuple[np.ndarray, np.ndarray]  # (input_ids, attention_mask), 1-D int64 each


def ascii_twin(tokenizer: Any) -> Any | None:
    """The same tokenizer with a lowercase-only normalizer, for printable ASCII texts; None unless its
    normalizer is BERT's.

    On printable ASCII, BERT's normalizer does nothing but (optionally) lowercase: no control characters to
    clean, no CJK characters to space, no accents for its Unicode decomposition to strip. That
    decomposition is a large share of a short text's tokenization, the gateway's largest per-text cost, and
    skipping it changes no id (tests/serving/test_codec_ascii.py compares both on generated printable ASCII
    texts and on non-ASCII ones, which keep the full normalizer)."""
    from tokenizers import Tokenizer, normalizers

    normalizer = tokenizer.normalizer
    if not isinstance(normalizer, normalizers.BertNormalizer):
        return None
    twin = Tokenizer.from_str(tokenizer.to_str())
    twin.normalizer = normalizers.Lowercase() if normalizer.lowercase else None
    return twin


class Codec:
    def __init__(self, tokenizer_dir: Path | None, max_seq_len: int) -> None:
        self.max_seq_len = max_seq_len
        self._tokenizer = None
        self._ascii_tokenizer = None
        self.pad_id = 0
        self.vocab_size: int | None = None
        if tokenizer_dir is not None:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
            tokenizer.no_padding()
            tokenizer.enable_truncation(max_length=max_seq_len)
            self._tokenizer = tokenizer
            self._ascii_tokenizer = ascii_twin(tokenizer)
            self.vocab_size = tokenizer.get_vocab_size()
            self.pad_id = self._pad_id(tokenizer, Path(tokenizer_dir))

    @staticmethod
    def _pad_id(tokenizer: object, folder: Path) -> int:
        config = folder / "tokenizer_config.json"
        pad_token = json.loads(config.read_text()).get("pad_token") if config.is_file() else None
        for token in (pad_token, "[PAD]", "<pad>"):
            if isinstance(token, str) and (token_id := tokenizer.token_to_id(token)) is not None:  # type: ignore[attr-defined]
                return int(token_id)
        return 0

    def encode(self, texts: Sequence[str]) -> tuple[list[Row], list[bool]]:
        """(rows, truncated per text): truncated when the tokenizer cut the text at max_seq_len tokens."""
        if self._tokenizer is None:
            raise BadRequest("this model was loaded without a tokenizer; send input_ids/attention_mask", status=422)
        tokenizer = self._tokenizer
        if self._ascii_tokenizer is not None and all(text.isascii() and text.isprintable() for text in texts):
            tokenizer = self._ascii_tokenizer
        encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
        encodings = encode(list(texts))
        rows, truncated = [], []
        for encoding in encodings:
            ids = np.asarray(encoding.ids, dtype=np.int64)
            rows.append((ids, np.ones_like(ids)))
            truncated.append(bool(encoding.overflowing))
        return rows, truncated

    def rows_from_tokens(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[Row]:
        """Split a client's (B, T) batch into rows, dropping right padding so the gateway can re-batch."""
        _, width = input_ids.shape
        if width > self.max_seq_len:
            raise BadRequest(f"sequence length {width} exceeds max_seq_len {self.max_seq_len}", status=422)
        if (
            self.vocab_size is not None
            and input_ids.size
            and (input_ids.min() < 0 or input_ids.max() >= self.vocab_size)
        ):
            raise BadRequest(
                f"input_ids must be in [0, {self.vocab_size}); got values in [{input_ids.min()}, {input_ids.max()}]",
                status=422,
            )
        if attention_mask.size and (attention_mask.min() < 0 or attention_mask.max() > 1):
            raise BadRequest("attention_mask values must be 0 or 1", status=422)
        rows = []
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            nonzero = np.flatnonzero(mask)
            length = int(nonzero[-1]) + 1 if nonzero.size else 1
            rows.append((ids[:length].copy(), mask[:length].copy()))
        return rows

    def collate(self, rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray]:
        width = min(self.max_seq_len, max(len(ids) for ids, _ in rows))
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for index, (ids, mask) in enumerate(rows):
            length = min(width, len(ids))
            input_ids[index, :length] = ids[:length]
            attention_mask[index, :length] = mask[:length]
        return input_ids, attention_mask
