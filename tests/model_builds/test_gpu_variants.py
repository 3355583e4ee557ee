"""FP8 and 2:4 builders on a real GPU (skipped where torch sees none); the CPU tests cover their skip path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infopt.params import Fp8Variant, PrunedVariant

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_fp8_and_two_four_build_on_gpu(tiny_pipeline) -> None:
    from infopt.engines.torch_engine import TorchEngine
    from model_builds.modeling import linear_sparsity
    from model_builds.variants import fp8, pruned
    from model_builds.variants.context import BuildContext

    p = tiny_pipeline
    ctx = BuildContext(
        p.teacher_dir, p.data_dir, p.root / "gpu-variants", p.root, p.seed, "cuda", p.model.max_seq_len, p.train
    )
    two_four = pruned.build(
        PrunedVariant(name="pruned-24", method="semi_structured_2_4", amount=0.5, finetune_epochs=1), ctx
    )
    if pruned.semi_structured_support("cuda") is None:
        assert two_four.status == "built" and two_four.precision == "fp16"
        assert two_four.details["sparse_vs_dense_max_abs_logit_diff"] < 0.05
        hf = p.root / two_four.artifact("torch").path
        assert (hf / "sparsity.json").is_file() and not (hf.parent / "onnx").exists()
        dense = TorchEngine(hf).model  # on the CPU the engine loads the (masked) weights densely
        assert abs(linear_sparsity(dense, dense.base_model.encoder) - 0.5) < 1e-6
        served = TorchEngine(hf, device="cuda", precision="fp16")
        assert served.sparse_modules == two_four.details["sparse_modules"] > 0
    built = fp8.build(Fp8Variant(name="fp8"), ctx)
    if fp8.fp8_support("cuda") is not None:
        assert built.status == "skipped"
        return
    assert built.status == "built" and built.artifacts[0].precision == "fp8"
    engine = fp8.Fp8Engine(p.root / built.artifacts[0].path)  # re-exported from infopt.engines.fp8_engine
    reference = TorchEngine(p.teacher_dir, device="cuda")
    split = ctx.split("test")
    agree = []
    for ids, mask, _ in split.batches(16):
        agree.extend(engine.infer(ids, mask).argmax(-1) == reference.infer(ids, mask).argmax(-1))
    assert np.mean(agree) >= 0.8  # per-tensor e4m3 weights and activations on a tiny, barely-trained model
    assert built.details["fp8_linear_layers"] == 7  # q, k, v, attention out, FFN in/out, pooler; head stays bf16
