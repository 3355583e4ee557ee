"""Profile stage on real tiny models: per-layer tables sum to 100%, attention/FFN split, ONNX profiler."""

from __future__ import annotations

import json

import pytest

from infopt.params import load_params
from model_builds.profile import GROUPS, layer_of, layer_table, run_profiles
from tests.model_builds.tiny_build import build_workspace


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = build_workspace(tmp_path_factory.mktemp("profile"))
    written = run_profiles(load_params(root / "params.yaml"), root)
    assert set(written) == {"fp32", "int8-dynamic"}  # fp8 was skipped by the variants stage
    for name in written:
        assert (root / "metrics/profiles" / f"{name}.txt").read_text().count("%") >= 1
    return {name: json.loads(path.read_text()) for name, path in written.items()}


@pytest.mark.parametrize(("variant", "engine"), [("fp32", "torch"), ("int8-dynamic", "onnxruntime")])
def test_layers_sum_to_100_and_split_is_present(profiles: dict[str, dict], variant: str, engine: str) -> None:
    report = profiles[variant]
    assert report["engine"] == engine
    assert sum(row["percent"] for row in report["layers"]) == pytest.approx(100.0, abs=0.01)
    layers = {row["layer"] for row in report["layers"]}
    assert {
        "embeddings",
        "encoder.layer.0.attention",
        "encoder.layer.0.ffn",
        "encoder.layer.1.attention",
        "encoder.layer.1.ffn",
        "classifier",
    } <= layers
    assert set(report["split"]) == set(GROUPS)
    assert sum(item["percent"] for item in report["split"].values()) == pytest.approx(100.0, abs=0.01)
    assert report["split"]["attention"]["percent"] > 0 and report["split"]["ffn"]["percent"] > 0
    assert "fingerprint" in report


def test_top_ops_are_ranked_with_percentages(profiles: dict[str, dict]) -> None:
    for report in profiles.values():
        ops = report["top_ops"]
        assert 0 < len(ops) <= 5  # top_k of the tiny params
        times = [op["self_time_ms"] for op in ops]
        assert times == sorted(times, reverse=True)
        assert all(0 <= op["percent"] <= 100 for op in ops)
    assert any(op["op"].startswith("aten::") for op in profiles["fp32"]["top_ops"])
    assert profiles["int8-dynamic"]["top_nodes"]  # ORT also reports per node


def test_layer_names_map_from_modules_and_onnx_nodes() -> None:
    assert layer_of("bert.encoder.layer.3.attention") == "encoder.layer.3.attention"
    assert layer_of("bert.encoder.layer.3.intermediate") == "encoder.layer.3.ffn"
    assert layer_of("/bert/encoder/layer.11/output/dense/MatMul_quant") == "encoder.layer.11.ffn"
    assert layer_of("/bert/embeddings/word_embeddings/Gather") == "embeddings"
    assert layer_of("distilbert.transformer.layer.0.ffn") == "encoder.layer.0.ffn"
    assert layer_of("/classifier/Gemm") == "classifier"
    assert layer_of("SkipLayerNormalization_3") is None


def test_layer_table_remainder_is_other() -> None:
    rows, split = layer_table(
        {"embeddings": 100.0, "encoder.layer.0.attention": 600.0, "encoder.layer.0.ffn": 200.0}, 1000.0
    )
    assert [row["layer"] for row in rows] == ["embeddings", "encoder.layer.0.attention", "encoder.layer.0.ffn", "other"]
    assert split["attention"]["percent"] == pytest.approx(60.0)
    assert split["other"]["percent"] == pytest.approx(10.0)
