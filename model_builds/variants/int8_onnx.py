"""int8_onnx: ONNX Runtime INT8 of the fp32 export, with optimum's avx512_vnni quantization presets.

dynamic: optimum's ORTQuantizer (weights int8, activations quantized at run time).
static: the same preset with is_static=True; calibration runs MinMax over `calibration_samples` TRAIN
texts. optimum's static path needs the `datasets` package (not a dependency here), so the preset's
settings are handed to onnxruntime.quantization.quantize_static, the function ORTQuantizer itself calls.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from infopt.manifest import VariantBuild
from infopt.params import Int8OnnxVariant
from model_builds.data import encode, pad_batch
from model_builds.modeling import linear_sparsity
from model_builds.variants.common import fresh_dir, skipped
from model_builds.variants.context import BuildContext
from model_builds.variants.onnx_export import copy_side_files

CALIBRATION_BATCH = 16
# The preset's static list also quantizes reshapes/transposes/normalisations; for BERT on CPU the
# weight-carrying ops are what pays (and what keeps accuracy), as in optimum's BERT examples.
STATIC_OPERATORS = ("MatMul", "Gather")


def quantize_dynamic(src_dir: Path, dst: Path, per_channel: bool) -> dict:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=per_channel)
    quantizer = ORTQuantizer.from_pretrained(str(src_dir), file_name="model.onnx")
    with tempfile.TemporaryDirectory(prefix="infopt-int8-") as scratch:
        quantizer.quantize(save_dir=scratch, quantization_config=config)
        shutil.move(str(Path(scratch) / "model_quantized.onnx"), str(dst))
    return {"quantizer": "optimum ORTQuantizer", "operators": ",".join(config.operators_to_quantize)}


class _Calibration:
    """onnxruntime CalibrationDataReader over padded batches of tokenized texts."""

    def __init__(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"input_ids": batch[0], "attention_mask": batch[1]}

    def rewind(self) -> None:  # onnxruntime's protocol; one pass is all MinMax needs
        return None


def calibration_batches(
    tokenizer, texts: list[str], max_seq_len: int, samples: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    chosen = [texts[i] for i in sorted(rng.choice(len(texts), size=min(samples, len(texts)), replace=False))]
    ids = encode(tokenizer, chosen, max_seq_len)
    return [
        pad_batch(ids[i : i + CALIBRATION_BATCH], int(tokenizer.pad_token_id))
        for i in range(0, len(ids), CALIBRATION_BATCH)
    ]


def quantize_static(src: Path, dst: Path, per_channel: bool, batches: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat
    from onnxruntime.quantization import quantize_static as ort_quantize_static
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    config = AutoQuantizationConfig.avx512_vnni(is_static=True, per_channel=per_channel)
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # ORT warns for every int64 shape Gather it leaves alone
    try:
        ort_quantize_static(
            str(src),
            str(dst),
            _Calibration(batches),
            quant_format=config.format,
            op_types_to_quantize=list(STATIC_OPERATORS),
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            activation_type=config.activations_dtype,
            weight_type=config.weights_dtype,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        logging.getLogger().setLevel(quiet)
    return {
        "quantizer": "onnxruntime quantize_static (optimum avx512_vnni preset)",
        "operators": ",".join(STATIC_OPERATORS),
        "calibration_method": "minmax",
        "quant_format": "QDQ" if config.format == QuantFormat.QDQ else "QOperator",
    }


def build(variant: Int8OnnxVariant, ctx: BuildContext) -> VariantBuild:
    if not ctx.onnx:
        return skipped(
            variant.name, variant.kind, "int8", "onnxruntime is not among benchmark.engines: no ONNX graph to quantize"
        )
    onnx_dir = fresh_dir(ctx.variant_dir(variant.name) / "onnx")
    src_dir = ctx.fp32_onnx_dir()
    details: dict = {"calibration": variant.calibration, "per_channel": variant.per_channel}
    if variant.calibration == "dynamic":
        details.update(quantize_dynamic(src_dir, onnx_dir / "model.onnx", variant.per_channel))
    else:
        batches = calibration_batches(
            ctx.tokenizer, ctx.texts("train"), ctx.max_seq_len, variant.calibration_samples, ctx.seed
        )
        details["calibration_samples"] = sum(len(ids) for ids, _ in batches)
        details.update(quantize_static(src_dir / "model.onnx", onnx_dir / "model.onnx", variant.per_channel, batches))
    copy_side_files(src_dir, onnx_dir)
    details["fp32_onnx_bytes"] = (src_dir / "model.onnx").stat().st_size
    details["int8_onnx_bytes"] = (onnx_dir / "model.onnx").stat().st_size
    teacher = ctx.teacher()
    return VariantBuild(
        name=variant.name,
        kind=variant.kind,
        precision="int8",
        status="built",
        artifacts=[ctx.artifact(onnx_dir, "onnxruntime", "onnx", "int8")],
        parameters=sum(p.numel() for p in teacher.parameters()),
        sparsity=linear_sparsity(teacher),
        details=details,
    )
