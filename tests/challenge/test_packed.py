from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from challenge.engines import EngineSpec, PackedEngine, build_engine, release
from challenge.forward import varlen_attention
from challenge.packed import TOKEN_ALIGN, TOKEN_BUCKET_GROWTH, pack, token_buckets
from infopt.engines.base import EngineError
from tests.challenge.conftest import engine_spec

_spec = engine_spec


def _ragged(rows: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded rows of random lengths 1..width, as the gateway's batcher pads them."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 120, size=(rows, width))
    mask = np.zeros_like(ids)
    for row, length in enumerate(rng.integers(1, width + 1, size=rows)):
        mask[row, :length] = 1
    ids[mask == 0] = 0
    return ids, mask


def test_token_buckets_grow_geometrically_in_aligned_steps() -> None:
    buckets = token_buckets(64 * 1024)
    assert buckets[0] == TOKEN_ALIGN and buckets[-1] >= 64 * 1024
    assert all(b % TOKEN_ALIGN == 0 for b in buckets)
    steps = np.diff(buckets)
    assert (steps >= TOKEN_ALIGN).all()
    # the padding a bucket adds is at most one growth step (or one aligned step while buckets are small)
    assert all(b <= max(a * TOKEN_BUCKET_GROWTH, a) + TOKEN_ALIGN for a, b in itertools.pairwise(buckets))
    with pytest.raises(ValueError, match="max_tokens must be positive"):
        token_buckets(0)


def test_pack_lays_each_rows_tokens_end_to_end_with_their_positions() -> None:
    ids = np.array([[7, 8, 9, 0], [5, 6, 0, 0], [1, 2, 3, 4]])
    mask = (ids != 0).astype(np.int64)
    packed = pack(ids, mask, max_len=4)
    assert packed.ids.tolist() == [7, 8, 9, 5, 6, 1, 2, 3, 4]
    assert packed.positions.tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3]
    assert packed.cu_seqlens.tolist() == [0, 3, 5, 9] and packed.cu_seqlens.dtype == np.int32
    with pytest.raises(EngineError, match="batch row 1 has no attended token"):
        pack(ids, np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]]), max_len=4)
    with pytest.raises(EngineError, match="attends to 4 tokens; this engine captured rows up to 3"):
        pack(ids, mask, max_len=3)


def test_varlen_attention_equals_attention_row_by_row() -> None:
    torch.manual_seed(1)
    lengths = [3, 1, 5]
    total = sum(lengths) + 2  # two trailing tokens that belong to no row
    q, k, v = (torch.randn(total, 2, 4) for _ in range(3))
    cu = torch.tensor([0, 3, 4, 9], dtype=torch.int32)
    out = varlen_attention(q, k, v, cu, max_len=5)
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        expected = torch.nn.functional.scaled_dot_product_attention(
            q[start:end].transpose(0, 1), k[start:end].transpose(0, 1), v[start:end].transpose(0, 1)
        ).transpose(0, 1)
        torch.testing.assert_close(out[start:end], expected)


def test_packed_engine_returns_hf_logits_for_ragged_batches(tiny_bert: Path) -> None:
    hf = build_engine(_spec(tiny_bert))
    spec = _spec(tiny_bert, family="static", graphs=True, packed=True, batch_sizes=(1, 8), length_buckets=(16, 32))
    engine = PackedEngine(spec, emulate_graphs=True)
    assert engine.max_rows == 8 and engine.max_len == 32
    assert engine.token_buckets == (256,) and engine.bucket_for(100) == 256
    with pytest.raises(EngineError, match="257 tokens exceed the largest captured bucket 256"):
        engine.bucket_for(257)
    # 19 rows run as chunks of 8; the widths differ from the captured lengths (no length buckets here)
    for rows, width, seed in ((1, 5, 0), (3, 16, 1), (8, 31, 2), (19, 9, 3)):
        ids, mask = _ragged(rows, width, seed)
        np.testing.assert_allclose(engine.infer(ids, mask), hf.infer(ids, mask), atol=1e-5)
    with pytest.raises(EngineError, match="attends to 33 tokens"):
        engine.infer(np.ones((2, 33), dtype=np.int64), np.ones((2, 33), dtype=np.int64))
    release(engine)
    release(hf)


def test_packed_spec_needs_static_graphs_and_excludes_the_length_split(tiny_bert: Path) -> None:
    with pytest.raises(ValueError, match="packed replays the static forward's token-count graphs"):
        _spec(tiny_bert, family="static", packed=True)
    with pytest.raises(ValueError, match="fp16 or bf16, not 'fp32'"):
        _spec(tiny_bert, family="static", graphs=True, packed=True, device="cuda", batch_sizes=(8,))
    with pytest.raises(ValueError, match="choose one"):
        _spec(tiny_bert, family="static", graphs=True, packed=True, split_lengths=True, batch_sizes=(8,))
    spec = _spec(tiny_bert, family="static", graphs=True, packed=True, batch_sizes=(1, 64), precision="fp16")
    assert "packed tokens, varlen attention, CUDA graphs per token count (rows <= 64)" in spec.describe()
    assert EngineSpec.model_validate_json(spec.model_dump_json()) == spec


def test_a_failed_graph_candidate_falls_back_to_the_plain_eager_forward(tiny_bert: Path) -> None:
    from challenge.ladder import eager_fallback

    for mode in ({"packed": True}, {"split_lengths": True}):
        spec = _spec(tiny_bert, family="static", graphs=True, batch_sizes=(1, 8), precision="fp16", **mode)
        fallback = eager_fallback(spec)
        assert (fallback.graphs, fallback.packed, fallback.split_lengths, fallback.batch_sizes) == (
            False,
            False,
            False,
            (),
        )
        assert (fallback.model_dir, fallback.precision, fallback.family) == (spec.model_dir, "fp16", "static")
