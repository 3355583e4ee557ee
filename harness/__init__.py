"""Client-side tools for tests and benchmarks: child servers, the vLLM CPU process, the load generator."""
