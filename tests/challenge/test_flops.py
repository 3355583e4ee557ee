from __future__ import annotations

import pytest

from challenge.flops import ArchitectureError, BertShape, roofline_fraction

BERT_BASE = {
    "model_type": "bert",
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "id2label": {str(i): f"c{i}" for i in range(45)},
}


def test_bert_base_at_64_tokens_is_the_hand_counted_11_02_gflop() -> None:
    # per layer: QKV 2*64*768*2304 = 226,492,416; scores + values 4*64*64*768 = 12,582,912;
    # output 2*64*768*768 = 75,497,472; FFN 4*64*768*3072 = 603,979,776 -> 918,552,576 x 12 layers
    encoder = 11_022_630_912
    head = 2 * 768 * 768 + 2 * 768 * 45  # pooler + classifier on [CLS]
    assert BertShape.from_config(BERT_BASE).flops(64) == encoder + head


def test_pruned_heads_and_ffn_shrink_only_their_layers() -> None:
    config = dict(BERT_BASE, pruned_heads={"0": [1, 2, 3]}, intermediate_size=2304)
    shape = BertShape.from_config(config)
    assert shape.attention_widths[0] == 9 * 64 and shape.attention_widths[1] == 768
    assert shape.ffn_widths == (2304,) * 12
    dense = BertShape.from_config(BERT_BASE)
    # layer 0 loses 3 of 12 heads: 8*T*H*192 + 4*T^2*192 at T = 32; every layer loses 768 FFN channels
    saved = 8 * 32 * 768 * 192 + 4 * 32 * 32 * 192 + 12 * 4 * 32 * 768 * 768
    assert dense.flops(32) - shape.flops(32) == saved


def test_a_mean_padded_length_may_be_fractional() -> None:
    shape = BertShape.from_config(BERT_BASE)
    assert shape.flops(20) < shape.flops(20.5) < shape.flops(21)


def test_other_architectures_are_refused_by_name() -> None:
    with pytest.raises(ArchitectureError, match="llama"):
        BertShape.from_config({"model_type": "llama", "hidden_size": 8})
    with pytest.raises(ArchitectureError, match="num_attention_heads"):
        BertShape.from_config({"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1, "intermediate_size": 4})


def test_roofline_fraction_is_achieved_over_ceiling() -> None:
    # 1,000 req/s x 11.02 GFLOP = 11.02 TFLOP/s against a 100 TFLOP/s ceiling
    assert roofline_fraction(1000.0, 11.02e9, 100e12) == pytest.approx(0.1102)
