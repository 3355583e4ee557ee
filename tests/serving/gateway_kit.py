"""What the gateway tests share: a tiny real ONNX classifier (the `tiny_model` fixture, registered in
tests/conftest.py), tenants and keys, settings, fake engines and real uvicorn servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn

from infopt.engines.base import EngineError
from infopt.params import BatchingParams, ServingParams, SlaClass, Tenant
from serving.settings import GatewaySettings

LABELS = ("computers", "science", "work")
WORDS = [
    "the",
    "kernel",
    "compiles",
    "code",
    "while",
    "the",
    "network",
    "sends",
    "packets",
    "to",
    "the",
    "server",
    "and",
    "the",
    "disk",
    "spins",
    "atoms",
    "form",
    "molecules",
    "in",
    "the",
    "lab",
    "where",
    "physics",
    "meets",
    "chemistry",
    "and",
    "biology",
    "under",
    "the",
    "microscope",
    "the",
    "manager",
    "schedules",
    "a",
    "meeting",
    "about",
    "the",
    "deadline",
    "while",
    "the",
    "office",
    "prints",
    "the",
    "report",
]
KEYS = {"acme": "acme-test-key", "globex": "globex-test-key", "initech": "initech-test-key"}
SLA = {
    "premium": SlaClass(p99_ms=150, timeout_ms=1000, priority=0, weight=8, k8s_priority_value=100000, preempts=True),
    "standard": SlaClass(p99_ms=300, timeout_ms=2000, priority=1, weight=3, k8s_priority_value=10000),
    "batch": SlaClass(p99_ms=None, timeout_ms=5000, priority=2, weight=1, k8s_priority_value=1000),
}


def tenant(
    name: str, sla_class: str, rate: float = 1000, burst: int = 1000, tpm: int | None = None, charge: str = "rows"
) -> Tenant:
    return Tenant(
        charge=charge,  # type: ignore[arg-type]
        name=name,
        sla_class=sla_class,
        rate_per_s=rate,
        burst=burst,
        tokens_per_minute=tpm,
        cost_center=f"cc-{name}",
        api_key_sha256=[hashlib.sha256(KEYS[name].encode()).hexdigest()],
    )


TENANTS = (tenant("acme", "premium"), tenant("globex", "standard"), tenant("initech", "batch"))


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny BertForSequenceClassification with a locally trained WordPiece tokenizer, as ONNX."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-onnx")
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(
        [" ".join(WORDS)] * 4, trainer=trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials)
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))],
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    ).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=len(LABELS),
    )
    model = BertForSequenceClassification(config).eval()

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    sample = torch.ones((2, 8), dtype=torch.int64)
    with warnings.catch_warnings():  # the tracer's TracerWarnings are expected; pytest turns warnings into errors
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Wrapper(),
            (sample, sample),
            str(folder / "model.onnx"),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
                "logits": {0: "batch"},
            },
        )
    return folder


def make_settings(model_dir: Path, **changes: object) -> GatewaySettings:
    base = GatewaySettings(
        model_name="textcls",
        variant="tiny",
        engine="onnxruntime",
        labels=LABELS,
        max_seq_len=32,
        sla_classes=dict(SLA),
        tenants=TENANTS,
        model_dir=model_dir,
        tokenizer_dir=model_dir,
        batching=BatchingParams(mode="dynamic", max_batch_size=8, max_wait_ms=2, preferred_batch_sizes=[4, 8]),
        serving=ServingParams(queue_capacity=64, max_body_bytes=4096, shutdown_grace_s=2.0),
        engine_threads=1,
    )
    own = {field.name for field in fields(GatewaySettings)}  # `batching` is the resolved one, not serving's
    serving_changes = {
        key: changes.pop(key) for key in list(changes) if key in ServingParams.model_fields and key not in own
    }
    if serving_changes:
        changes["serving"] = base.serving.model_copy(update=serving_changes)
    return replace(base, **changes)  # type: ignore[arg-type]


async def until(condition: Callable[[], object], timeout_s: float = 30.0) -> None:
    """Poll a condition of the server's state: explicit synchronisation, bounded (a stall only makes it later)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, f"condition not reached within {timeout_s} s"
        await asyncio.sleep(0.01)


PERMIT_TIMEOUT_S = 60.0  # a test that never releases a permit fails after this instead of hanging


class FakeEngine:
    """Fixed service time per batch; raises while `failing` is set; hangs on rows whose first id is HANG_ID;
    when a test gives it `permits`, each batch waits for one (`permits.release(n)` lets n batches through):
    state to synchronise on, not a timer."""

    name = "fake"
    device = "cpu"
    HANG_ID = 4  # [MASK]: never the first id of a tokenized text (that is [CLS])

    def __init__(self, service_s: float = 0.0, num_labels: int = len(LABELS), hang_s: float = 0.0) -> None:
        self.service_s = service_s
        self.num_labels = num_labels
        self.hang_s = hang_s
        self.end_hang = threading.Event()  # set: a hang (and any later one) ends now instead of after hang_s
        self.failing = threading.Event()
        self.permits: threading.Semaphore | None = None
        self.batches: list[int] = []

    def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.batches.append(len(input_ids))
        if self.failing.is_set():
            raise EngineError(f"fake engine failure on a batch of {len(input_ids)}")
        if self.hang_s and (input_ids[:, 0] == self.HANG_ID).any():
            self.end_hang.wait(self.hang_s)
        if self.permits is not None and not self.permits.acquire(timeout=PERMIT_TIMEOUT_S):
            raise EngineError(f"fake engine got no permit for {PERMIT_TIMEOUT_S} s")
        if self.service_s:
            time.sleep(self.service_s)
        logits = np.zeros((len(input_ids), self.num_labels), dtype=np.float32)
        logits[np.arange(len(input_ids)), input_ids[:, 0] % self.num_labels] = 1.0  # echo: row i -> class ids[i,0] % C
        return logits

    def close(self) -> None:
        self.batches.append(-1)


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve_in_thread(
    app: object, *, grace_s: float | None = None, ready_timeout_s: float = 30.0, admin_sock: socket.socket | None = None
) -> Iterator[tuple[str, uvicorn.Server]]:
    """The gateway's own server (serving.server.build_server: limits, drain) on 127.0.0.1:<free port> in a
    thread with its own loop; stops itself. `grace_s` is only how long the join waits beyond the drain."""
    from serving.server import build_server

    sock = free_socket()
    server = build_server(app)  # type: ignore[arg-type]
    sockets = [sock] if admin_sock is None else [sock, admin_sock]
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)
    thread.start()
    start = time.monotonic()
    while not server.started:
        if not thread.is_alive() or time.monotonic() - start > ready_timeout_s:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield url, server
    finally:
        server.should_exit = True
        thread.join(timeout=server.config.timeout_graceful_shutdown + (grace_s or 0) + 10)
        sock.close()


@asynccontextmanager
async def serve(app: object, *, grace_s: float | None = None) -> AsyncIterator[str]:
    """Async wrapper: start the threaded server and wait until the model is ready."""
    import httpx

    with serve_in_thread(app, grace_s=grace_s) as (url, _server):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            for _ in range(600):
                if (await client.get("/v2/health/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"{url} never became ready")
        yield url


@contextmanager
def serve_workers(
    settings: GatewaySettings,
    *,
    workers: int,
    engines: list | None = None,
    ready_timeout_s: float = 120.0,
    admin: bool = False,
    ready: bool = True,
) -> Iterator[tuple[str, Any]]:
    """A multi-process gateway (serving.supervisor: the admission process runs in a thread of this test
    process with `engines`, its `workers` HTTP workers are real processes) on 127.0.0.1:<free port>; yields
    (url, supervisor) once every worker serves (and, with `ready`, the gateway answers ready), and stops it
    (the real drain) afterwards; the supervisor's thread has ended when the block is left."""
    import httpx

    from serving.supervisor import Supervisor, reuseport_sockets

    sockets = reuseport_sockets("127.0.0.1", 0, workers)
    admin_sockets = reuseport_sockets("127.0.0.1", 0, workers) if admin else None
    if admin_sockets:
        settings = replace(
            settings, serving=settings.serving.model_copy(update={"admin_port": admin_sockets[0].getsockname()[1]})
        )
    supervisor = Supervisor(settings, workers=workers, sockets=sockets, admin_sockets=admin_sockets, engines=engines)
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["exit"] = asyncio.run(supervisor.run())
        except BaseException as error:  # surfaced by the fixture, not lost in the thread
            result["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{supervisor.port}"
    deadline = time.monotonic() + ready_timeout_s
    try:
        while True:  # every worker up: each has its link attached and answers a ready probe
            assert thread.is_alive(), f"supervisor stopped: {result}"
            serving = [link for link in supervisor.admission.links if link.pid is not None]  # HELLO seen
            if len(serving) == workers:
                if not ready:
                    break
                try:
                    if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            assert time.monotonic() < deadline, f"multi-process gateway not ready within {ready_timeout_s} s"
            time.sleep(0.05)
        yield url, supervisor
    finally:
        supervisor.stop()
        thread.join(timeout=settings.serving.shutdown_grace_s + 20)
        for sock in [*sockets, *(admin_sockets or [])]:
            sock.close()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
