"""Fixtures shared by the vLLM tests: one real vLLM server per session, and fake OpenAI upstreams.

The real server (from .venv-vllm, serving the tiny Llama of model_builds/tiny_llama.py) is started once and
kept in `config.stash`, so test modules that import these fixtures share it instead of each starting one.
It runs with `--max-num-seqs 1` so that requests really queue: that makes `vllm:num_requests_waiting`
and priority scheduling observable on a 2-core machine. It is held to one CPU (`engine_cpus()`): unpinned, its
engine keeps both cores busy and its API server leaves /metrics polls waiting for most of a long generation
(benchmarks/vllm_pinning.py), which failed the tests that watch the queue form.

The fake upstream is a Starlette app on 127.0.0.1 that records every body it receives, for asserting what
the gateway sends (priority, model name, stream options) and for the failure and balancing tests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from harness.vllm_process import DEFAULT_VENV, VllmProcess, VllmServerSettings, engine_cpus
from model_builds.tiny_llama import TinyLlamaSpec, build_tiny_llama

SERVED_MODEL = "tiny-llama"
VLLM_STARTUP_TIMEOUT_S = 300.0  # measured 35 s idle, 79 s loaded, 260 s at load average 10 on 2 cores
# Context of the test model and server: long enough for a blocker generation that outlasts a test's set-up
# (16,000 tokens take about a minute on the pinned server: benchmarks/results/vllm_pinning.json; KV ~1 KiB a
# token), after which the test aborts it. 4,096 was too short while the server was unpinned: its API server
# could fall behind its engine for most of a generation.
VLLM_TEST_CONTEXT = 16384
_MODEL_KEY = pytest.StashKey[Path]()
_SERVER_KEY = pytest.StashKey[VllmProcess]()


@pytest.fixture(scope="session")
def tiny_llama_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama folder, built once per session with this venv's transformers."""
    stash = request.config.stash
    if _MODEL_KEY not in stash:
        spec = TinyLlamaSpec(max_position_embeddings=VLLM_TEST_CONTEXT)
        stash[_MODEL_KEY] = build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model", spec)
    return stash[_MODEL_KEY]


@pytest.fixture(scope="session")
def vllm_server(request: pytest.FixtureRequest, tiny_llama_dir: Path) -> VllmProcess:
    """A real vLLM OpenAI server on 127.0.0.1 (skips only when .venv-vllm is not installed)."""
    if not (DEFAULT_VENV / "bin" / "python").is_file():
        pytest.skip(f"{DEFAULT_VENV} is not installed: run scripts/setup_vllm.sh (CI does)")
    stash = request.config.stash
    if _SERVER_KEY not in stash:
        settings = VllmServerSettings(
            model=tiny_llama_dir,
            served_model_name=SERVED_MODEL,
            startup_timeout_s=VLLM_STARTUP_TIMEOUT_S,
            max_model_len=VLLM_TEST_CONTEXT,
            extra_args=("--max-num-seqs", "1"),
            cpus=engine_cpus(),  # the tests poll its /metrics mid-generation: keep a core for its API server's clients
        )
        process = VllmProcess(settings)
        request.config.add_cleanup(process.stop)
        process.start()
        stash[_SERVER_KEY] = process
    process = stash[_SERVER_KEY]
    if not process.running:  # a test stopped it and failed before restarting it
        process.start()
    return process


# ----------------------------------------------------------------------------- fake upstream
@dataclass
class FakeUpstream:
    """An OpenAI-compatible stand-in that records request bodies; `waiting` is what /metrics reports."""

    name: str
    port: int = 0
    waiting: float = 0.0
    bodies: list[dict] = field(default_factory=list)
    hold: asyncio.Event | None = None  # when set: answers (or a stream's first chunk) wait for the event
    health_hold: asyncio.Event | None = None  # when set: /health waits for the event (a busy server)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> Starlette:
        async def completions(request: Request) -> Response:
            body = await request.json()
            self.bodies.append(body)
            usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
            if not body.get("stream"):
                if self.hold is not None:
                    await self.hold.wait()
                choice = {"index": 0, "text": f"from {self.name}", "finish_reason": "length"}
                answer = {"id": "cmpl-fake", "model": body.get("model"), "choices": [choice], "usage": usage}
                return JSONResponse(answer)

            async def events() -> AsyncIterator[bytes]:
                if self.hold is not None:
                    await self.hold.wait()
                for word in ("from", self.name):
                    chunk = {"id": "cmpl-fake", "choices": [{"index": 0, "text": word, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n".encode()
                if (body.get("stream_options") or {}).get("include_usage"):
                    yield f"data: {json.dumps({'id': 'cmpl-fake', 'choices': [], 'usage': usage})}\n\n".encode()
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        async def health(_request: Request) -> Response:
            if self.health_hold is not None:
                await self.health_hold.wait()
            return PlainTextResponse("")

        async def metrics(_request: Request) -> Response:
            text = (
                "# TYPE vllm:num_requests_waiting gauge\n"
                f'vllm:num_requests_waiting{{engine="0",model_name="{SERVED_MODEL}"}} {self.waiting}\n'
            )
            return PlainTextResponse(text)

        return Starlette(
            routes=[
                Route("/v1/completions", completions, methods=["POST"]),
                Route("/v1/chat/completions", completions, methods=["POST"]),
                Route("/health", health),
                Route("/metrics", metrics),
            ]
        )

    async def start(self) -> FakeUpstream:
        config = uvicorn.Config(
            self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off",
            timeout_graceful_shutdown=1,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve())
        for _ in range(500):  # at most 5 s
            if self._server.started or self._task.done():
                break
            await asyncio.sleep(0.01)
        if not self._server.started:
            await self.stop()
            raise RuntimeError(f"fake upstream {self.name} did not start on 127.0.0.1:{self.port}")
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        server, task, self._server, self._task = self._server, self._task, None, None
        if server is not None:
            server.should_exit = True
        if task is not None:
            await asyncio.wait_for(task, timeout=10)


@pytest.fixture
async def fake_upstreams() -> AsyncIterator[list[FakeUpstream]]:
    """Two fake upstreams, started on free loopback ports and stopped after the test."""
    upstreams = [await FakeUpstream("a").start(), await FakeUpstream("b").start()]
    yield upstreams
    for upstream in upstreams:
        await upstream.stop()


def sse_events(raw: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    return [line[5:].strip() for line in raw.decode().splitlines() if line.startswith("data:")]


async def read_body(response: Response) -> bytes:
    """The whole body of a (streaming or plain) Starlette response, as a client would receive it."""
    if isinstance(response, StreamingResponse):
        return b"".join([chunk async for chunk in response.body_iterator])
    return bytes(response.body)
