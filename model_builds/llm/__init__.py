"""The causal-LM path: the llm_* stages of dvc.yaml (prepare, train, variants, evaluate, benchmark)."""
