from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from challenge.forward import ForwardError, StaticBert, check_against_hf, load_hf


def _batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(5, vocab, (4, 16), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # padded rows, as the gateway's codec pads
    mask[3, 2:] = 0
    ids[mask == 0] = 0
    return ids, mask


def test_static_forward_equals_the_hf_forward_with_padding(tiny_bert: Path) -> None:
    model = load_hf(tiny_bert)
    ids, mask = _batch(model.config.vocab_size)
    assert check_against_hf(StaticBert(model, device="cpu", precision="fp32"), model, ids, mask) < 1e-5


def test_head_pruned_model_runs_with_its_own_attention_widths(tiny_bert: Path, tmp_path: Path) -> None:
    from model_builds.variants.pruned import prune_heads_and_ffn

    model = load_hf(tiny_bert)
    prune_heads_and_ffn(model, 0.5)  # the pipeline's structured pruning: 2 of 4 heads and half the FFN
    model.save_pretrained(str(tmp_path))
    pruned = load_hf(tmp_path)
    static = StaticBert(pruned, device="cpu", precision="fp32")
    assert [layer["heads"] for layer in static.layers] == [2, 2]
    ids, mask = _batch(pruned.config.vocab_size)
    assert check_against_hf(static, pruned, ids, mask) < 1e-5


def test_bf16_and_fp8_stay_close_to_fp32(tiny_bert: Path) -> None:
    model = load_hf(tiny_bert)
    ids, mask = _batch(model.config.vocab_size)
    reference = StaticBert(model, device="cpu", precision="fp32")(ids, mask)
    for linear in ("dense", "fp8"):
        logits = StaticBert(model, device="cpu", precision="bf16", linear=linear)(ids, mask)
        assert logits.dtype == torch.float32
        scale = float(reference.abs().max())
        assert float((logits - reference).abs().max()) < 0.1 * scale, linear


def test_fp8_linear_quantizes_weights_to_float8(tiny_bert: Path) -> None:
    static = StaticBert(load_hf(tiny_bert), device="cpu", precision="bf16", linear="fp8")
    qkv = static.layers[0]["qkv"]
    assert qkv.weight_t.dtype == torch.float8_e4m3fn
    assert tuple(qkv.weight_t.shape) == (32, 96)  # (K, N): q, k and v fused into one matmul
    assert float(qkv.weight_t.float().abs().max()) == 448.0  # per-tensor scale maps the largest |w| to 448


def test_fused_gelu_path_matches_linear_then_gelu(tiny_bert: Path) -> None:
    model = load_hf(tiny_bert)
    ids, mask = _batch(model.config.vocab_size)
    fused = StaticBert(model, device="cpu", precision="fp32", fused_gelu=True)
    plain = StaticBert(model, device="cpu", precision="fp32", fused_gelu=False)
    assert fused.fused_gelu
    np.testing.assert_allclose(fused(ids, mask).numpy(), plain(ids, mask).numpy(), atol=1e-5)


def test_unsupported_settings_are_refused_by_name(tiny_bert: Path) -> None:
    model = load_hf(tiny_bert)
    with pytest.raises(ForwardError, match="precision must be bf16"):
        StaticBert(model, device="cpu", precision="fp16", linear="fp8")
    model.config.position_embedding_type = "relative_key"
    with pytest.raises(ForwardError, match="relative_key"):
        StaticBert(model, device="cpu", precision="fp32")
