from __future__ import annotations

import json

import pytest
import torch

from infopt.engines.torch_engine import TorchEngine
from infopt.hashing import tree_sha256, tree_size
from infopt.params import PrunedVariant
from model_builds.modeling import count_parameters, linear_sparsity
from model_builds.variants.pruned import encoder_linears
from model_builds.variants.record import VariantBuildError, load_variant_build

# FP16/INT8 vs FP32 on the test split: same top-1 on >= 90% of examples and logits within these bounds.
MIN_AGREEMENT = 0.9
MAX_LOGIT_DIFF = {"fp16": 0.05, "int8-dynamic": 0.5, "int8-static": 0.75}


def test_every_enabled_variant_has_a_valid_variant_json(tiny_builds, tiny_pipeline) -> None:
    builds, _, _ctx = tiny_builds
    root = tiny_pipeline.root
    assert set(builds) == {
        "fp32",
        "fp16",
        "int8-dynamic",
        "int8-static",
        "pruned-l1",
        "pruned-heads",
        "pruned-24",
        "distilled",
        "fp8",
    }
    assert not (root / "variants" / "bf16").exists()  # disabled: no folder
    for name, build in builds.items():
        assert load_variant_build(root / "variants" / name) == build
        for artifact in build.artifacts:
            assert artifact.sha256 == tree_sha256(root / artifact.path)
            assert artifact.size_bytes == tree_size(root / artifact.path)
            assert artifact.path.startswith(f"variants/{name}/")
        if build.status == "built":
            assert build.parameters and build.parameters > 0


def test_load_variant_build_names_a_bad_file(tmp_path) -> None:
    (tmp_path / "variant.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(VariantBuildError, match=r"variant\.json"):
        load_variant_build(tmp_path)


def test_onnx_artifacts_take_ids_and_mask_with_dynamic_axes(tiny_builds, tiny_pipeline) -> None:
    import onnxruntime as ort

    builds, _, _ = tiny_builds
    session = ort.InferenceSession(str(tiny_pipeline.root / builds["fp32"].artifact("onnxruntime").path / "model.onnx"))
    inputs = {item.name: item for item in session.get_inputs()}
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert inputs["input_ids"].type == "tensor(int64)" and all(isinstance(d, str) for d in inputs["input_ids"].shape)
    assert session.get_outputs()[0].name == "logits"


@pytest.mark.parametrize("name", ["fp16", "int8-dynamic", "int8-static"])
def test_reduced_precision_agrees_with_fp32(tiny_builds, name: str) -> None:
    builds, results, _ = tiny_builds
    onnx = results[name]["engines"]["onnxruntime"]
    assert onnx["agreement_with_baseline"] >= MIN_AGREEMENT, onnx
    assert onnx["max_abs_logit_diff_vs_baseline"] <= MAX_LOGIT_DIFF[name], onnx
    assert builds[name].precision == {"fp16": "fp16"}.get(name, "int8")
    if name == "fp16":
        assert builds[name].artifact("torch").precision == "fp16"
        assert results[name]["engines"]["torch"]["agreement_with_baseline"] >= MIN_AGREEMENT


def test_int8_is_smaller_than_fp32(tiny_builds) -> None:
    builds, _, _ = tiny_builds
    details = builds["int8-dynamic"].details
    # int8 weights are 4x smaller; at toy size the graph itself is a large share, hence 0.7 not 0.25
    assert details["int8_onnx_bytes"] < 0.7 * details["fp32_onnx_bytes"]
    assert builds["int8-dynamic"].artifact("onnxruntime").size_bytes < builds["fp32"].artifact("onnxruntime").size_bytes
    assert builds["int8-static"].details["calibration_samples"] == 32


def test_l1_pruning_gives_the_requested_sparsity_after_finetune(tiny_builds, tiny_pipeline) -> None:
    builds, _, _ = tiny_builds
    build = builds["pruned-l1"]
    assert abs(build.details["encoder_linear_sparsity"] - 0.4) <= 0.01
    model = TorchEngine(tiny_pipeline.root / build.artifact("torch").path).model  # the saved, fine-tuned weights
    assert abs(linear_sparsity(model, model.base_model.encoder) - 0.4) <= 0.01
    assert build.sparsity == pytest.approx(linear_sparsity(model))
    teacher = TorchEngine(tiny_pipeline.teacher_dir).model
    changed = [
        not torch.equal(a.weight, b.weight)
        for a, b in zip(encoder_linears(model), encoder_linears(teacher), strict=False)
    ]
    assert all(changed)  # the fine-tune really updated the surviving weights


def test_structured_pruning_shrinks_layers_and_reloads(tiny_builds, tiny_pipeline) -> None:
    builds, results, _ = tiny_builds
    build = builds["pruned-heads"]
    model = TorchEngine(tiny_pipeline.root / build.artifact("torch").path).model
    assert count_parameters(model) == build.parameters < builds["fp32"].parameters
    layer = model.base_model.encoder.layer[0]
    assert layer.attention.self.num_attention_heads == 3  # 4 heads, 25% removed
    assert layer.intermediate.dense.out_features == 48  # 64 channels, 25% removed
    assert results["pruned-heads"]["engines"]["onnxruntime"]["quality"]["n"] == 16


def test_distillation_records_kd_and_control(tiny_builds) -> None:
    builds, _, _ = tiny_builds
    details = builds["distilled"].details
    for key in ("kd_val_accuracy", "no_kd_val_accuracy", "kd_test_accuracy", "no_kd_test_accuracy"):
        assert 0.0 <= details[key] <= 1.0
    assert details["kd_minus_no_kd"] == pytest.approx(details["kd_test_accuracy"] - details["no_kd_test_accuracy"])
    assert details["kd_minus_no_kd_low"] <= details["kd_minus_no_kd"] <= details["kd_minus_no_kd_high"]
    assert details["kd_beats_no_kd"] == (details["kd_minus_no_kd_low"] > 0)  # the interval decides, not the point
    assert 0.0 <= details["kd_vs_no_kd_mcnemar_p"] <= 1.0
    assert builds["distilled"].parameters < builds["fp32"].parameters


def test_fp8_and_semi_structured_are_skipped_on_cpu_with_reasons(tiny_builds, tiny_pipeline) -> None:
    builds, results, _ = tiny_builds
    assert builds["fp8"].status == "skipped" and "compute capability >= 8.9" in builds["fp8"].skip_reason
    assert "this run's device is cpu" in builds["fp8"].skip_reason
    assert builds["pruned-24"].status == "skipped" and "cpu" in builds["pruned-24"].skip_reason
    assert builds["fp8"].artifacts == [] and (tiny_pipeline.root / "variants" / "fp8" / "variant.json").is_file()
    assert results["fp8"] == {"status": "skipped", "skip_reason": builds["fp8"].skip_reason}


def test_two_four_masks_keep_two_of_every_four() -> None:
    from transformers import BertConfig, BertForSequenceClassification

    from model_builds.variants.pruned import two_four_masks

    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    masks = two_four_masks(model)
    for module, mask in masks.items():
        assert torch.all(mask.reshape(-1, 4).sum(1) == 2)
        assert torch.all(module.weight.reshape(-1, 4).ne(0).sum(1) <= 2)


def test_builds_are_deterministic_given_the_seed(tiny_builds, tiny_pipeline) -> None:
    from model_builds.variants import pruned
    from model_builds.variants.context import BuildContext

    builds, _, _ = tiny_builds
    p = tiny_pipeline
    torch.set_num_threads(1)  # as when tiny_builds ran: float sums depend on the thread count
    ctx = BuildContext(
        p.teacher_dir, p.data_dir, p.root / "rebuild", p.root, p.seed, "cpu", p.model.max_seq_len, p.train
    )
    try:
        again = pruned.build(
            PrunedVariant(name="pruned-l1", method="l1_unstructured", amount=0.4, finetune_epochs=1), ctx
        )
    finally:
        ctx.close()
    first = builds["pruned-l1"]
    assert again.artifact("torch").sha256 == first.artifact("torch").sha256
    assert again.artifact("onnxruntime").sha256 == first.artifact("onnxruntime").sha256
