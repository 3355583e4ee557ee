"""The naive LLM servers of the framework comparison: a model's `generate` behind a minimal HTTP server.

One request at a time (an asyncio lock around `generate`): no batching, no scheduling, which is what
"plain transformers generate behind a minimal server" means, and the baseline vLLM is measured against.
Engines: `transformers` (AutoModelForCausalLM, float32) and `onnxruntime` (optimum's ORTModelForCausalLM
over a `text-generation-with-past` export). Both speak the subset of the OpenAI completions API the
comparison uses: `prompt` as token ids or text, `max_tokens`, `stream` (SSE, one event per token, a final
usage event, `[DONE]`); greedy, exactly `max_tokens` tokens (`min_new_tokens`).

    python -m harness.llm_servers --engine transformers --model DIR --port 8100
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

ENGINES = ("transformers", "onnxruntime")


def load_model(engine: str, model_dir: Path) -> Any:
    if engine == "transformers":
        import torch
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    if engine == "onnxruntime":
        from optimum.onnxruntime import ORTModelForCausalLM

        return ORTModelForCausalLM.from_pretrained(str(model_dir), use_cache=True)
    raise ValueError(f"engine {engine!r} is not one of {ENGINES}")


class _TokenQueue:
    """A transformers streamer that hands each generated token id to the event loop's queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[int | None]) -> None:
        self.loop, self.queue, self.skipped_prompt = loop, queue, False

    def put(self, value: Any) -> None:
        if not self.skipped_prompt:  # generate() first puts the prompt
            self.skipped_prompt = True
            return
        for token in value.reshape(-1).tolist():
            self.loop.call_soon_threadsafe(self.queue.put_nowait, int(token))

    def end(self) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)


def create_app(engine: str, model_dir: Path, threads: int) -> Starlette:
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(threads)
    model = load_model(engine, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    lock = asyncio.Lock()

    def prompt_ids(body: dict[str, Any]) -> list[int]:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and all(isinstance(item, int) for item in prompt):
            return prompt
        if isinstance(prompt, str):
            return tokenizer(prompt)["input_ids"]
        raise ValueError("prompt must be a string or a list of token ids")

    def generate(ids: list[int], max_tokens: int, streamer: _TokenQueue | None) -> list[int]:
        inputs = torch.tensor([ids])
        with torch.no_grad():
            out = model.generate(
                input_ids=inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                streamer=streamer,
            )
        return out[0, len(ids) :].tolist()

    async def completions(request: Request) -> Response:
        body = await request.json()
        try:
            ids = prompt_ids(body)
            max_tokens = int(body.get("max_tokens", 16))
        except (ValueError, TypeError) as error:
            return JSONResponse({"error": {"message": str(error), "code": 400}}, status_code=400)
        usage = {"prompt_tokens": len(ids), "completion_tokens": max_tokens, "total_tokens": len(ids) + max_tokens}
        if not body.get("stream"):
            async with lock:
                tokens = await asyncio.to_thread(generate, ids, max_tokens, None)
            text = tokenizer.decode(tokens)
            return JSONResponse({"choices": [{"index": 0, "text": text, "finish_reason": "length"}], "usage": usage})

        async def events() -> AsyncIterator[bytes]:
            async with lock:
                queue: asyncio.Queue[int | None] = asyncio.Queue()
                streamer = _TokenQueue(asyncio.get_running_loop(), queue)
                worker = asyncio.create_task(asyncio.to_thread(generate, ids, max_tokens, streamer))
                while (token := await queue.get()) is not None:
                    chunk = {"choices": [{"index": 0, "text": tokenizer.decode([token]), "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n".encode()
                await worker
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def health(_request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[Route("/v1/completions", completions, methods=["POST"]), Route("/health", health, methods=["GET"])]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=ENGINES, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error(f"--host {args.host} is not a loopback address; these servers are for 127.0.0.1")
    import uvicorn

    uvicorn.run(create_app(args.engine, args.model, args.threads), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
