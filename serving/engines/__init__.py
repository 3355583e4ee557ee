"""In-process engines (ONNX Runtime, PyTorch) behind one contract; vLLM is a remote engine (serving.vllm)."""
