"""The LLM stages end to end at toy size (real fortunes text, a real BPE, real training), plus the pieces
whose answer is known by hand: the W8A8 arithmetic, the KD loss and the non-inferiority decision."""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from infopt.deployments import DeploymentError, resolve_deployment
from infopt.manifest import Manifest, load_manifest
from infopt.params import (
    Deployment,
    LlmArchitecture,
    LlmBaselineVariant,
    LlmBenchmarkParams,
    LlmDataParams,
    LlmDistilledVariant,
    LlmEvaluateParams,
    LlmHalfVariant,
    LlmInt8Variant,
    LlmParams,
    LlmTrainParams,
    Params,
    ParamsError,
    load_params,
    parse_params,
)
from infopt.paths import LLM_DATA_DIR, LLM_TEACHER_DIR, LLM_TOKENIZER_DIR, LLM_VARIANTS_DIR
from model_builds.llm import benchmark, evaluate, prepare, train, variants
from model_builds.llm.corpus import read_split
from model_builds.llm.modeling import DocumentScores, kd_loss, load_causal_lm
from model_builds.llm.quantize import W8A8Linear
from model_builds.llm.record import BENCHMARK_JSON, QUALITY_JSON, llm_manifest

REPO = Path(__file__).resolve().parents[3]
ARCH = LlmArchitecture(
    hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1
)


def tiny_llm() -> LlmParams:
    return LlmParams(
        name="toylm",
        preset="toy",
        presets={"toy": ARCH},
        vocab_size=400,
        max_seq_len=48,
        data=LlmDataParams(sources=["fortunes"], max_documents=400, test_fraction=0.2, val_fraction=0.1),
        train=LlmTrainParams(steps=40, batch_size=8, lr=5e-3, warmup_steps=4),
        variants=[
            LlmBaselineVariant(name="lm-fp32"),
            LlmHalfVariant(name="lm-bf16"),
            LlmInt8Variant(name="lm-int8"),
            LlmDistilledVariant(
                name="lm-student",
                student=LlmArchitecture(
                    hidden_size=32,
                    intermediate_size=64,
                    num_hidden_layers=1,
                    num_attention_heads=1,
                    num_key_value_heads=1,
                ),
                steps=10,
            ),
        ],
        evaluate=LlmEvaluateParams(max_documents=60, bootstrap_resamples=300, batch_size=16),
        benchmark=LlmBenchmarkParams(batch_sizes=[1, 2], prompt_tokens=8, output_tokens=4, min_iters=2, max_seconds=1),
    )


@dataclass
class Workspace:
    root: Path
    params: Params
    train_metrics: dict


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("llm")
    params = load_params(REPO / "params.yaml").model_copy(update={"llm": tiny_llm(), "deployments": []})
    llm = params.llm
    assert llm is not None
    (root / QUALITY_JSON).parent.mkdir(parents=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(llm.train.threads)  # as the stages' main() do
    try:
        with contextlib.chdir(root):  # the stages write to the repository-relative paths of infopt.paths
            prepare.prepare(llm, params.seed, root / LLM_DATA_DIR, root / LLM_TOKENIZER_DIR)
            metrics = train.train_teacher(
                llm, params.seed, "cpu", root / LLM_TEACHER_DIR, root / LLM_TOKENIZER_DIR, root / LLM_DATA_DIR
            )
            variants.build_all(llm, params.seed, "cpu", root)
            (root / QUALITY_JSON).write_text(json.dumps(evaluate.evaluate(llm, params.seed, "cpu", root)))
            (root / BENCHMARK_JSON).write_text(json.dumps(benchmark.run_benchmark(params, root)))
    finally:
        torch.set_num_threads(threads)
    return Workspace(root, params, metrics)


def test_splits_are_disjoint_documents_and_the_tokenizer_has_the_asked_vocabulary(workspace: Workspace) -> None:
    splits = {name: read_split(workspace.root / LLM_DATA_DIR, name) for name in ("train", "val", "test")}
    assert {name: len(docs) for name, docs in splits.items()} == {"train": 280, "val": 40, "test": 80}
    assert not set(splits["test"]) & set(splits["train"]) and not set(splits["val"]) & set(splits["train"])
    stats = json.loads((workspace.root / LLM_DATA_DIR / "stats.json").read_text())
    assert stats["vocab_size"] == 400 and "BSD" in stats["licences"][0]


def test_the_teacher_learns_well_below_the_uniform_loss(workspace: Workspace) -> None:
    uniform = math.log(400)  # 5.99 nats: a model that learned nothing
    assert workspace.train_metrics["first_loss"] > uniform - 0.5
    assert workspace.train_metrics["val_loss"] < uniform - 1.0


def test_int8_folder_is_compressed_tensors_w8a8_with_channel_scales(workspace: Workspace) -> None:
    folder = workspace.root / LLM_VARIANTS_DIR / "lm-int8" / "hf"
    config = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert (config["quant_method"], config["format"]) == ("compressed-tensors", "int-quantized")
    group = config["config_groups"]["group_0"]
    assert group["weights"]["strategy"] == "channel" and group["weights"]["symmetric"] is True
    assert group["input_activations"]["strategy"] == "token" and group["input_activations"]["dynamic"] is True
    assert config["ignore"] == ["lm_head"]
    state = load_file(str(folder / "model.safetensors"))
    teacher = load_file(str(workspace.root / LLM_TEACHER_DIR / "model.safetensors"))
    name = "model.layers.0.mlp.down_proj"
    weight, scale = state[f"{name}.weight"], state[f"{name}.weight_scale"]
    assert weight.dtype == torch.int8 and scale.shape == (weight.shape[0], 1)
    assert f"{name}.weight_zero_point" not in state
    error = (teacher[f"{name}.weight"] - weight.float() * scale).abs()
    assert (error <= scale / 2 + 1e-7).all()  # round to nearest: at most half a step per weight
    assert state["model.embed_tokens.weight"].dtype == torch.float32  # embeddings (tied lm_head) stay float


def test_w8a8_linear_reproduces_integer_arithmetic_worked_by_hand() -> None:
    # x = [0.5, -1, 0.25]: scale 1/127, q = [64 (63.5 rounds half to even), -127, 32].
    # W row 0 = [1, 2, 3]: scale 3/127, q = [42, 85, 127]; row 1 = [-1, 0, 1]: scale 1/127, q = [-127, 0, 127].
    # y0 = (64*42 - 127*85 + 32*127) * (1/127) * (3/127) = -4043 * 3 / 16129
    # y1 = (64*-127 + 32*127) * (1/127) * (1/127) = -4064 / 16129
    weight_q = torch.tensor([[42, 85, 127], [-127, 0, 127]], dtype=torch.int8)
    scale = torch.tensor([[3 / 127], [1 / 127]])
    layer = W8A8Linear(weight_q, scale, None)
    y = layer(torch.tensor([[0.5, -1.0, 0.25]]))
    assert y[0, 0].item() == pytest.approx(-4043 * 3 / 16129, rel=1e-6)
    assert y[0, 1].item() == pytest.approx(-4064 / 16129, rel=1e-6)


def test_kd_loss_equals_the_hand_computed_kl() -> None:
    # teacher logits [ln 3, 0] at T=2 -> p = [sqrt3, 1] / (sqrt3 + 1) = [0.6339746, 0.3660254]; the student is
    # uniform. KL(p || u) = 0.6339746 ln 1.2679492 + 0.3660254 ln 0.7320508
    #                     = 0.6339746 * 0.2374008 - 0.3660254 * 0.3119054 = 0.0363408; times T^2 = 0.1453631.
    teacher_logits = torch.tensor([[[math.log(3.0), 0.0]]])
    teacher = lambda inputs: SimpleNamespace(logits=teacher_logits)  # noqa: E731
    student_logits = torch.zeros(1, 1, 2)
    targets = torch.tensor([[0]])
    soft_only = kd_loss(teacher, temperature=2.0, alpha=1.0)(student_logits, targets, torch.zeros(1, 1))
    assert soft_only.item() == pytest.approx(0.1453631, abs=1e-6)
    mixed = kd_loss(teacher, temperature=2.0, alpha=0.5)(student_logits, targets, torch.zeros(1, 1))
    assert mixed.item() == pytest.approx(0.5 * 0.1453631 + 0.5 * math.log(2), abs=1e-6)  # CE of uniform = ln 2


def test_quality_has_intervals_and_paired_decisions_for_every_variant(workspace: Workspace) -> None:
    report = json.loads((workspace.root / QUALITY_JSON).read_text())
    entries = report["variants"]
    assert set(entries) == {"lm-fp32", "lm-bf16", "lm-int8", "lm-student"}
    base = entries["lm-fp32"]
    assert "within_budget" not in base and base["documents"] == 60
    for name, entry in entries.items():
        ppl = entry["perplexity"]
        assert ppl["low"] <= ppl["estimate"] <= ppl["high"], name
        assert entry["tokens"] == base["tokens"], name  # the same documents and tokens for every variant
    # bf16 and W8A8 are near-copies of the teacher: small paired increase, tight intervals
    for name in ("lm-bf16", "lm-int8"):
        assert abs(entries[name]["perplexity_increase"]["estimate"]) < 0.05, name
    # a 10-step student is far worse than the teacher: outside both budgets
    assert entries["lm-student"]["perplexity_increase"]["low"] > 0.05
    assert entries["lm-student"]["within_budget"] is False


def test_decision_on_crafted_scores_follows_the_upper_bounds() -> None:
    tokens = np.full(400, 20.0)
    base = DocumentScores(nll=tokens * 3.0, correct=np.full(400, 8.0), tokens=tokens)
    same = DocumentScores(nll=tokens * 3.0 + 0.2, correct=np.full(400, 8.0), tokens=tokens)  # +0.01 nats/token
    worse = DocumentScores(nll=tokens * 3.2, correct=np.full(400, 6.0), tokens=tokens)  # +0.2 nats, -10 points
    llm = tiny_llm()
    report = evaluate.quality_report({"lm-fp32": base, "same": same, "worse": worse}, "lm-fp32", llm, seed=0)
    assert report["same"]["perplexity_increase"]["estimate"] == pytest.approx(math.expm1(0.01), abs=1e-6)
    assert report["same"]["within_budget"] is True
    assert report["worse"]["accuracy_loss"]["estimate"] == pytest.approx(0.1)
    assert report["worse"]["within_perplexity_budget"] is False and report["worse"]["within_budget"] is False


def test_every_variant_folder_generates_with_transformers(workspace: Workspace) -> None:
    for name in ("lm-fp32", "lm-bf16", "lm-int8", "lm-student"):
        model = load_causal_lm(workspace.root / LLM_VARIANTS_DIR / name / "hf")
        out = model.generate(input_ids=torch.tensor([[1, 5, 9]]), max_new_tokens=3, min_new_tokens=3, do_sample=False)
        assert out.shape == (1, 6), name


def test_benchmark_times_every_variant_and_files_int8_under_its_reference_engine(workspace: Workspace) -> None:
    report = json.loads((workspace.root / BENCHMARK_JSON).read_text())
    assert report["variants"]["lm-int8"]["engine"] == "torch-w8a8-reference"
    assert "conservative" in report["engine_notes"]["torch-w8a8-reference"]
    assert report["variants"]["lm-int8"]["sweeps"][0]["engine"] == "torch-w8a8-reference"
    (sweep,) = report["variants"]["lm-fp32"]["sweeps"]
    assert sweep["engine"] == "torch" and sweep["shape"] == "generation"
    points = sweep["points"]
    assert [point["batch_size"] for point in points] == [1, 2]
    assert all(point["throughput_rps"] > 0 and point["iterations"] >= 2 and point["rounds"] == 1 for point in points)


def test_manifest_llm_section_lets_a_vllm_deployment_resolve_an_llm_variant(workspace: Workspace) -> None:
    section = llm_manifest(workspace.params, workspace.root)
    assert section is not None and section.baseline == "lm-fp32"
    int8 = section.variant("lm-int8")
    assert int8.precision == "int8" and int8.quality is not None and int8.quality.perplexity_increase is not None
    assert [s.engine for s in int8.sweeps] == [
        "torch-w8a8-reference"
    ] and "benchmark_note.torch-w8a8-reference" in int8.details
    classifier = load_manifest(REPO / "tests/fixtures/manifest.json")
    manifest = Manifest.model_validate({**classifier.model_dump(), "llm": section.model_dump()})
    tenants = [tenant.name for tenant in workspace.params.tenants]
    deployment = Deployment(name="chat", variant="lm-int8", engine="vllm", tenants=tenants)
    params = workspace.params.model_copy(update={"deployments": [deployment]})
    resolved = resolve_deployment(params, manifest, "chat")
    assert resolved.artifact.path.endswith("lm-int8/hf") and resolved.artifact.sha256 == int8.artifacts[0].sha256
    with pytest.raises(DeploymentError, match="only engine vllm serves it"):
        resolve_deployment(params, manifest, "chat", engine="onnxruntime")


def test_params_refuse_an_llm_variant_on_a_classifier_engine() -> None:
    raw = load_params(REPO / "params.yaml").model_dump(mode="json")
    raw["deployments"].append(
        {"name": "chat", "variant": raw["llm"]["variants"][0]["name"], "engine": "onnxruntime", "tenants": ["acme"]}
    )
    with pytest.raises(ParamsError, match="is an LLM variant: its engine must be vllm"):
        parse_params(raw)
