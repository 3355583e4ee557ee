"""The Inference Optimization Challenge: a measured ladder of serving optimizations (`infopt challenge`).

Each step (fp32 batch 1 -> precision -> dynamic batching -> launch overhead -> pruning -> fp8/int8) is
measured on the model-level engine and, where it applies, through the real gateway; every number carries
the accuracy decision against step 1, its cost per 1k requests and its fraction of the measured matmul
roofline. docs/challenge.md describes the method; challenge/ladder.py runs it.
"""
