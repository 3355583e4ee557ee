"""The gateway of a ladder step: the project's gateway serving the step's engine.

    python -m challenge.gateway_child --spec SPEC.json --port PORT

What `infopt serve` runs (auth, token bucket, priority queue with deadlines, dynamic batcher, metrics): with
`workers` 1 the app (`serving.app.create_app`) in one process (`serving.server.run_server`); with 2 or more
the supervisor (`serving.supervisor.run_supervisor`): N HTTP worker processes on one port in front of one
admission process that owns the queue, the batcher and the ONE engine. The only difference from `infopt
serve` is the engine factory: it builds the step's engine from the spec (challenge/engines.py), e.g. the
CUDA-graph engine, which `infopt serve` cannot select from params today. Bound to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from challenge.engines import EngineSpec
from infopt.params import BatchingParams, ServingParams, SlaClass, Tenant

if TYPE_CHECKING:
    from infopt.engines.base import Engine

API_KEY = "challenge-load-key"
TENANT = "challenge"


class GatewaySpec(BaseModel):
    """What one gateway child serves and how (written by challenge/gateway.py)."""

    model_config = ConfigDict(extra="forbid")

    engine: EngineSpec
    labels: list[str]
    max_seq_len: int
    tokenizer_dir: str
    sla_classes: dict[str, SlaClass]
    sla_class: str  # the load tenant's class (premium)
    batching: BatchingParams
    serving: ServingParams
    connections: int  # the most connections this process will hold (its file limit is raised to fit)
    workers: int = 1  # HTTP worker processes in front of the admission process (serving.workers); 1 = one process


def load_tenant(sla_class: str) -> Tenant:
    """One unthrottled tenant of the step's SLA class: the load measures the gateway, not its quota."""
    return Tenant(
        name=TENANT,
        sla_class=sla_class,
        rate_per_s=1e9,
        burst=1_000_000_000,
        cost_center="challenge",
        api_key_sha256=[hashlib.sha256(API_KEY.encode()).hexdigest()],
    )


def settings_of(spec: GatewaySpec, port: int):  # -> serving.settings.GatewaySettings
    from serving.settings import GatewaySettings

    engine = spec.engine
    return GatewaySettings(
        model_name="challenge",
        variant=engine.variant,
        engine="onnxruntime" if engine.family == "onnxruntime" else "torch",
        labels=tuple(spec.labels),
        max_seq_len=spec.max_seq_len,
        sla_classes=dict(spec.sla_classes),
        tenants=(load_tenant(spec.sla_class),),
        batching=spec.batching,
        serving=spec.serving,
        model_dir=Path(engine.model_dir),
        tokenizer_dir=Path(spec.tokenizer_dir),
        precision=engine.precision,
        device=engine.device,
        engine_threads=engine.threads,
        host="127.0.0.1",
        port=port,
        log_level="warning",
    )


def engines_for(spec: GatewaySpec) -> list[Engine]:
    """serving.engine_replicas engines of the step's spec behind the one queue: the batcher runs a batch on each
    free one, so one replica's host work (packing, copies, launches, reading back) overlaps another's GPU time."""
    from challenge.engines import build_engine

    return [build_engine(spec.engine) for _ in range(spec.serving.engine_replicas)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    from challenge.loadclient import raise_file_limit
    from serving.app import create_app
    from serving.server import run_server

    spec = GatewaySpec.model_validate_json(args.spec.read_text())
    raise_file_limit(spec.connections + 256)
    settings = settings_of(spec, args.port)
    factory = lambda _settings: engines_for(spec)  # noqa: E731
    if spec.workers >= 2:
        from serving.supervisor import run_supervisor

        sys.exit(run_supervisor(settings, workers=spec.workers, log_level="warning", engine_factory=factory))
    run_server(create_app(settings, engine_factory=factory), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
