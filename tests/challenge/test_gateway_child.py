from __future__ import annotations

import hashlib
from pathlib import Path

from challenge.engines import EngineSpec
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
