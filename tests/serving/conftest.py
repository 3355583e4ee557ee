"""The vLLM fixtures (one real vLLM CPU server per session, fake OpenAI upstreams) for this folder's tests."""

from tests.serving.vllm_fixtures import fake_upstreams, tiny_llama_dir, vllm_server

__all__ = ["fake_upstreams", "tiny_llama_dir", "vllm_server"]
