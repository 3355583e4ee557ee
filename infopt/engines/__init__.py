"""In-process engines (ONNX Runtime, PyTorch, FP8) behind one contract, shared by the pipeline (evaluate,
benchmark, profile) and the gateway: what is measured is what is served. vLLM is a remote engine
(serving/vllm_backend.py)."""
