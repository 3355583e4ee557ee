from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from challenge.engines import EngineSpec
from challenge.gateway import GatewayRun, measure_gateway
from challenge.gateway_child import API_KEY, GatewaySpec, settings_of
from infopt.params import BatchingParams, load_params

REPO = Path(__file__).resolve().parents[2]


def test_gateway_child_serves_the_step_engine_to_one_unthrottled_premium_tenant(tmp_path: Path) -> None:
    params = load_params(REPO / "params.yaml")
    engine = EngineSpec(
        family="onnxruntime", model_dir=str(tmp_path), variant="int8-dynamic", precision="int8", threads=1
    )
    spec = GatewaySpec(
        engine=engine,
        labels=["a", "b"],
        max_seq_len=64,
        tokenizer_dir=str(tmp_path),
        sla_classes=dict(params.sla_classes),
        sla_class="premium",
        batching=BatchingParams(max_batch_size=32, max_wait_ms=2),
        serving=params.serving,
        connections=100,
    )
    again = GatewaySpec.model_validate_json(spec.model_dump_json())
    settings = settings_of(again, port=4321)
    assert (settings.engine, settings.variant, settings.precision) == ("onnxruntime", "int8-dynamic", "int8")
    assert settings.batching.max_batch_size == 32 and settings.host == "127.0.0.1" and settings.port == 4321
    (tenant,) = settings.tenants
    assert tenant.sla_class == "premium" and tenant.rate_per_s >= 1e9
    assert tenant.api_key_sha256 == [hashlib.sha256(API_KEY.encode()).hexdigest()]


def _workspace_spec(ladder_workspace: Path, *, max_batch: int, connections: int, workers: int = 1) -> GatewaySpec:
    """A gateway spec serving the workspace's fp32 HF variant to the premium load tenant."""
    params = load_params(ladder_workspace / "params.yaml")
    engine = EngineSpec(
        family="hf", model_dir=str(ladder_workspace / "artifacts/variants/fp32/hf"), variant="fp32", threads=1
    )
    return GatewaySpec(
        engine=engine,
        labels=json.loads((ladder_workspace / "data/prepared/labels.json").read_text()),
        max_seq_len=params.model.max_seq_len,
        tokenizer_dir=str(ladder_workspace / "artifacts/tokenizer"),
        sla_classes=dict(params.sla_classes),
        sla_class="premium",
        batching=BatchingParams(max_batch_size=max_batch, max_wait_ms=2),
        serving=params.serving.model_copy(update={"shutdown_grace_s": 1.0}),
        connections=connections,
        workers=workers,
    )


def _one_level(spec: GatewaySpec, workdir: Path, *, connections: int, texts: list[str], **options: int) -> GatewayRun:
    """One short closed-loop level through the gateway, no SLA to judge."""
    return measure_gateway(
        spec,
        client_processes=1,
        connection_levels=[connections],
        texts=texts,
        warmup_s=0.5,
        duration_s=1.5,
        ready_timeout_s=120.0,
        workdir=workdir,
        p99_sla_ms=None,
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.slow
def test_a_gateway_with_workers_serves_the_step_engine_from_one_admission_process(
    ladder_workspace: Path, tmp_path: Path
) -> None:
    """The ladder's gateway as `infopt serve --workers 2` runs it: one port, two HTTP workers, one engine;
    the batch histogram (rendered by the admission process) counts every answered request."""
    spec = _workspace_spec(ladder_workspace, max_batch=8, connections=16, workers=2)
    run = _one_level(
        spec, tmp_path, connections=4, texts=["a short gloss", "another text to classify", "three words here"]
    )
    assert run.error is None and run.processes == 2 and "2 HTTP worker processes" in run.mode
    (level,) = run.levels
    assert level.client.ok > 0 and level.failed_fraction == 0.0
    assert level.mean_batch_size is not None and 1.0 <= level.mean_batch_size <= 8.0
    # the gateway's own CPU in the window: the admission loop, its engine thread, and both HTTP workers
    roles = level.gateway_cpu
    assert {"main process: event loop thread", "main process: other threads"} <= set(roles), roles
    assert sum(role.startswith("child pid") for role in roles) == 2, roles
    assert roles["main process: other threads"] > 0.0  # the engine computed in its thread during the window
    assert all(0.0 <= share <= 4.0 for share in roles.values()), roles


@pytest.mark.slow
def test_clients_may_send_several_texts_per_request_through_the_gateway(ladder_workspace: Path, tmp_path: Path) -> None:
    """k texts per request reach the engine as k rows: batches hold whole requests, texts/s is k x req/s."""
    spec = _workspace_spec(ladder_workspace, max_batch=16, connections=8)
    texts = ["a short gloss", "another text to classify", "three words here", "and a fourth"]
    run = _one_level(spec, tmp_path, connections=2, texts=texts, texts_per_request=4)
    (level,) = run.levels
    assert run.texts_per_request == 4 and level.client.ok > 0 and level.failed_fraction == 0.0
    assert run.texts_per_s == pytest.approx(4 * level.client.throughput_rps)
    assert level.mean_batch_size is not None and level.mean_batch_size >= 4.0  # never less than one request
    assert "main process: event loop thread" in level.gateway_cpu  # one process: HTTP, admission and engine


@pytest.mark.slow
def test_replicas_are_independent_gateways_sharing_the_load(ladder_workspace: Path, tmp_path: Path) -> None:
    """Two gateways (each its own engine) behind one load: both serve, their batches and CPU are counted."""
    spec = _workspace_spec(ladder_workspace, max_batch=8, connections=8)
    run = _one_level(spec, tmp_path, connections=4, texts=["a short gloss", "another text to classify"], replicas=2)
    (level,) = run.levels
    assert run.replicas == 2 and "2 such gateways" in run.mode
    assert level.client.ok > 0 and level.failed_fraction == 0.0 and level.mean_batch_size is not None
    for replica in (0, 1):  # the connections alternate over the two ports: both engines computed
        assert level.gateway_cpu[f"replica {replica}: main process: other threads"] > 0.0, level.gateway_cpu
    assert (tmp_path / "replica-1" / "gateway.log").is_file()


def test_the_child_builds_every_engine_replica_of_its_spec(ladder_workspace: Path) -> None:
    """serving.engine_replicas is honoured (it was dropped: the child always built one engine): independent
    engines of the one spec, each answering the same rows alike."""
    import numpy as np

    from challenge.gateway_child import engines_for

    spec = _workspace_spec(ladder_workspace, max_batch=8, connections=8)
    spec = spec.model_copy(update={"serving": spec.serving.model_copy(update={"engine_replicas": 2})})
    first, second = engines_for(spec)
    assert first is not second
    ids = np.array([[2, 7, 9, 3, 0], [2, 11, 3, 0, 0]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    np.testing.assert_allclose(first.infer(ids, mask), second.infer(ids, mask), rtol=1e-5, atol=1e-6)
    assert len(engines_for(_workspace_spec(ladder_workspace, max_batch=8, connections=8))) == 1


@pytest.mark.slow
def test_a_gateway_with_two_engine_replicas_serves_the_load(ladder_workspace: Path, tmp_path: Path) -> None:
    """Two engines behind one admission process and two HTTP workers: every request answered, the run says so."""
    spec = _workspace_spec(ladder_workspace, max_batch=4, connections=16, workers=2)
    spec = spec.model_copy(update={"serving": spec.serving.model_copy(update={"engine_replicas": 2})})
    run = _one_level(spec, tmp_path, connections=8, texts=["a short gloss", "another text to classify"])
    assert run.error is None and run.engine_replicas == 2 and "2 engine replicas" in run.mode
    (level,) = run.levels
    assert level.client.ok > 0 and level.failed_fraction == 0.0
    assert level.mean_batch_size is not None and 1.0 <= level.mean_batch_size <= 4.0
