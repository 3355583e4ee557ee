"""TorchServe handler for the framework comparison's TorchServe row: greedy `generate` of a Hugging Face
causal LM packed into the .mar with --extra-files. TorchServe is archived upstream (no fixes, no security
patches): this exists only to put a number beside vLLM, never to serve anything.

Request body: {"prompt": [token ids] | "text", "max_tokens": N}; answer: {"text": ..., "usage": {...}}.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from ts.torch_handler.base_handler import BaseHandler


class LlmHandler(BaseHandler):
    def initialize(self, context: Any) -> None:
        model_dir = context.system_properties["model_dir"]
        threads = int(context.model_yaml_config.get("threads", 1)) if context.model_yaml_config else 1
        torch.set_num_threads(threads)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.initialized = True

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[str]:
        answers = []
        for row in data:
            body = row.get("body") or row.get("data") or {}
            if isinstance(body, bytes | bytearray):
                body = json.loads(body)
            prompt = body["prompt"]
            ids = prompt if isinstance(prompt, list) else self.tokenizer(prompt)["input_ids"]
            max_tokens = int(body.get("max_tokens", 16))
            inputs = torch.tensor([ids])
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=inputs,
                    attention_mask=torch.ones_like(inputs),
                    max_new_tokens=max_tokens,
                    min_new_tokens=max_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            tokens = out[0, len(ids) :].tolist()
            usage = {
                "prompt_tokens": len(ids),
                "completion_tokens": len(tokens),
                "total_tokens": len(ids) + len(tokens),
            }
            answers.append(json.dumps({"text": self.tokenizer.decode(tokens), "usage": usage}))
        return answers
