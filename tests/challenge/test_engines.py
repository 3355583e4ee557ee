from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from challenge.engines import EngineSpec, StaticEngine, build_engine, release
from infopt.engines.base import Engine, EngineError
from tests.challenge.conftest import engine_spec

_spec = engine_spec


def _batch(rows: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 120, size=(rows, width))
    mask = np.ones_like(ids)
    mask[0, width // 2 :] = 0
    ids[mask == 0] = 0
    return ids, mask


def _matches_hf_then_refuses_wider(engine: Engine, hf: Engine, batches: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """The graph engine's logits equal HF's on each batch; a batch wider than its buckets is refused; both closed."""
    for ids, mask in batches:
        np.testing.assert_allclose(engine.infer(ids, mask), hf.infer(ids, mask), atol=1e-5)
    with pytest.raises(EngineError, match="exceeds the largest captured shape"):
        engine.infer(*_batch(3, 33, seed=0))
    release(engine)
    release(hf)


def test_graph_path_pads_to_captured_shapes_and_returns_the_same_logits(tiny_bert: Path) -> None:
    hf = build_engine(_spec(tiny_bert))
    graphs = StaticEngine(
        _spec(tiny_bert, family="static", graphs=True, batch_sizes=(1, 4, 8), length_buckets=(16, 32)),
        emulate_graphs=True,
    )
    assert len(graphs.shapes) == 6
    assert graphs.shape_for(3, 17) == (4, 32)  # rows up to the next captured size, width to the next bucket
    assert graphs.shape_for(1, 16) == (1, 16)
    # 19 rows: split into captured batches of 8
    batches = [_batch(rows, width, seed=rows) for rows, width in ((1, 5), (3, 16), (8, 31), (19, 9))]
    _matches_hf_then_refuses_wider(graphs, hf, batches)


def test_graphs_are_refused_off_cuda_unless_emulated(tiny_bert: Path) -> None:
    with pytest.raises(EngineError, match="need device cuda"):
        build_engine(_spec(tiny_bert, family="static", graphs=True, batch_sizes=(1,), length_buckets=(16,)))


def test_static_engine_refuses_a_model_its_forward_disagrees_with(tiny_bert: Path, tmp_path: Path) -> None:
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(str(tiny_bert))
    model.config.hidden_act = "relu"  # served as relu by HF ...
    model.save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="hidden_act 'relu'"):  # ... and refused by the static forward
        StaticEngine(_spec(tmp_path, family="static"))


def test_tf32_engine_restores_the_matmul_precision(tiny_bert: Path) -> None:
    before = torch.get_float32_matmul_precision()
    engine = build_engine(_spec(tiny_bert, precision="tf32"))
    assert torch.get_float32_matmul_precision() == "high"
    assert engine.infer(*_batch(2, 8, seed=1)).shape == (2, 3)
    release(engine)
    assert torch.get_float32_matmul_precision() == before


def test_engine_spec_round_trips_through_json(tiny_bert: Path) -> None:
    spec = _spec(tiny_bert, family="static", graphs=True, batch_sizes=(1, 8), length_buckets=(16,), precision="bf16")
    assert EngineSpec.model_validate_json(spec.model_dump_json()) == spec
    assert "CUDA graphs (2 batch sizes x 1 lengths)" in spec.describe()


def test_length_split_runs_sub_batches_and_returns_rows_in_order(tiny_bert: Path) -> None:
    hf = build_engine(_spec(tiny_bert))
    split = StaticEngine(
        _spec(
            tiny_bert,
            family="static",
            graphs=True,
            split_lengths=True,
            batch_sizes=(1, 2, 4, 8),
            length_buckets=(8, 16, 32),
        ),
        emulate_graphs=True,
    )
    assert set(split.replay_s) == set(split.shapes) and all(t > 0 for t in split.replay_s.values())
    rng = np.random.default_rng(3)
    ids = rng.integers(5, 120, size=(19, 30))
    mask = np.zeros_like(ids)
    lengths = rng.integers(2, 31, size=19)
    lengths[4] = 30  # one long row among short ones: a split batch pads the short rows to their own bucket
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    ids[mask == 0] = 0
    _matches_hf_then_refuses_wider(split, hf, [(ids, mask)])


def test_length_split_needs_graphs(tiny_bert: Path) -> None:
    with pytest.raises(ValueError, match=r"split_lengths .* needs graphs=true"):
        _spec(tiny_bert, family="static", split_lengths=True)
