"""How close to the bf16 matmul rate can bert-base's packed forward get on this GPU, and what holds it back?

The ladder's best dense engine (packed tokens, ladder.json step 4) reached 0.39 of an 8192^3 bf16 matmul.
This probe splits that number on the served shape (2,048 rows of the test split's real lengths, about
40,000 tokens; hidden 768, FFN 3,072, 12 layers; random weights):

- each of a layer's four matmuls alone (QKV, output, FFN up with its GELU epilogue, FFN down) at that token
  count, in bf16 and in fp8 (`torch._scaled_mm`, activations already quantized), as a fraction of the
  ceiling: the most any forward built from these cuBLAS calls can reach;
- fp8's per-call activation quantization (amax, scale, cast) at the same shapes;
- the whole packed forward (eager, CUDA events) against 12 x the four matmuls: the share of its time that is
  not matmul (attention, LayerNorm, residual and embedding passes);
- the same forward under torch.compile (inductor fuses the elementwise passes), at one token count.

    python -m benchmarks.gpu_roofline_probe --data DIR --tokenizer DIR --out OUT.json     (CUDA only)
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from benchmarks.gpu_packed_probe import MAX_LEN, _batch, _lengths, start_probe

ROWS = 2048
RUNS = 20


def _time_ms(torch: Any, call: Any, runs: int = RUNS) -> float:
    """Median CUDA-event milliseconds of `call` after 3 warm-up calls."""
    from challenge.roofline import time_cuda

    return float(np.median(time_cuda(call, 3, runs)))


def _matmuls(torch: Any, tokens: int, hidden: int, ffn: int, ceiling: float) -> list[dict[str, Any]]:
    F = torch.nn.functional
    x = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
    x_ffn = torch.randn(tokens, ffn, device="cuda", dtype=torch.bfloat16)
    shapes = {"qkv": (hidden, 3 * hidden), "out": (hidden, hidden), "up+gelu": (hidden, ffn), "down": (ffn, hidden)}
    one = torch.ones((), device="cuda")
    cells = []
    for name, (k, n) in shapes.items():
        a = x if k == hidden else x_ffn
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        b = torch.zeros(n, device="cuda", dtype=torch.bfloat16)
        if name == "up+gelu":
            bf16_ms = _time_ms(torch, lambda a=a, w=w, b=b: torch._addmm_activation(b, a, w.t(), use_gelu=True))
        else:
            bf16_ms = _time_ms(torch, lambda a=a, w=w, b=b: F.linear(a, w, b))
        a8 = a.to(torch.float8_e4m3fn)
        w8 = w.to(torch.float8_e4m3fn).t()
        fp8_ms = _time_ms(
            torch,
            lambda a8=a8, w8=w8, b=b: torch._scaled_mm(
                a8, w8, scale_a=one, scale_b=one, bias=b, out_dtype=torch.bfloat16, use_fast_accum=True
            ),
        )

        def quantize(a: Any = a) -> Any:
            amax = a.abs().amax().float().clamp(min=1e-12)
            return (a * (448.0 / amax).to(a.dtype)).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)

        flops = 2.0 * tokens * k * n
        cells.append(
            {
                "matmul": name,
                "m_k_n": [tokens, k, n],
                "bf16_ms": bf16_ms,
                "bf16_fraction_of_ceiling": flops / (bf16_ms / 1e3) / ceiling,
                "fp8_ms": fp8_ms,
                "fp8_fraction_of_bf16_ceiling": flops / (fp8_ms / 1e3) / ceiling,
                "fp8_quantize_input_ms": _time_ms(torch, quantize),
                "flops": flops,
            }
        )
    return cells


def _parts(torch: Any, forward: Any, inputs: tuple[Any, ...], packed: Any, mask: np.ndarray) -> dict[str, float]:
    """Milliseconds of one layer's non-matmul passes at the served token count, each alone."""
    from challenge.forward import varlen_attention

    F = torch.nn.functional
    tokens, hidden, heads = len(packed.ids), forward.hidden, forward.layers[0]["heads"]
    qkv = torch.randn(tokens, 3, heads, forward.head_dim, device="cuda", dtype=torch.bfloat16)
    q, k, v = qkv.unbind(1)
    cu = inputs[2]
    x = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
    norm = forward.layers[0]["norm1"]
    rows, width = mask.shape
    padded = torch.randn(rows, heads, width, forward.head_dim, device="cuda", dtype=torch.bfloat16)
    keep = torch.from_numpy(mask).cuda().bool()[:, None, None, :]
    with torch.inference_mode():
        return {
            "varlen_attention_ms": _time_ms(torch, lambda: varlen_attention(q, k, v, cu, MAX_LEN)),
            "padded_sdpa_with_mask_ms": _time_ms(
                torch, lambda: F.scaled_dot_product_attention(padded, padded, padded, attn_mask=keep)
            ),
            "padded_sdpa_no_mask_ms": _time_ms(torch, lambda: F.scaled_dot_product_attention(padded, padded, padded)),
            "residual_add_ms": _time_ms(torch, lambda: x + y),
            "layer_norm_ms": _time_ms(torch, lambda: F.layer_norm(x, (hidden,), norm[0], norm[1], forward.eps)),
            "padded_width": float(width),
        }


def main() -> None:
    import torch

    from challenge.flops import BertShape
    from challenge.forward import StaticBert, load_hf
    from challenge.packed import pack
    from infopt.fingerprint import collect

    probe = start_probe(__doc__.splitlines()[0])
    args, ceiling, config = probe.args, probe.ceiling, probe.config
    shape = BertShape.from_config(config.to_dict())
    rng = np.random.default_rng(0)
    ids, mask = _batch(_lengths(args.data, args.tokenizer), ROWS, rng)
    packed = pack(ids, mask, MAX_LEN)
    tokens = len(packed.ids)
    request_flops = float(sum(shape.flops(n) for n in mask.sum(1)))
    results: dict[str, Any] = {
        "fingerprint": collect("cuda").model_dump(mode="json"),
        "ceiling": ceiling.model_dump(mode="json"),
        "rows": ROWS,
        "tokens": tokens,
        "request_flops": request_flops,
        "matmuls": _matmuls(torch, tokens, config.hidden_size, config.intermediate_size, ceiling.flops_per_s),
    }
    print(json.dumps(results["matmuls"]), flush=True)
    forward = StaticBert(load_hf(probe.folder), device="cuda", precision="bf16")
    inputs = (
        torch.from_numpy(packed.ids).cuda(),
        torch.from_numpy(packed.positions).cuda(),
        torch.from_numpy(packed.cu_seqlens).cuda(),
        torch.from_numpy(packed.cu_seqlens[:-1].astype(np.int64)).cuda(),
    )
    layers = config.num_hidden_layers
    matmul_ms = layers * sum(cell["bf16_ms"] for cell in results["matmuls"])
    with torch.inference_mode():
        eager_ms = _time_ms(torch, lambda: forward.packed(*inputs, MAX_LEN))
    results["forward"] = {
        "eager_ms": eager_ms,
        "fraction_of_ceiling": request_flops / (eager_ms / 1e3) / ceiling.flops_per_s,
        "matmuls_alone_ms": matmul_ms,
        "non_matmul_share": 1.0 - matmul_ms / eager_ms,
        "upper_bound_if_only_matmuls": request_flops / (matmul_ms / 1e3) / ceiling.flops_per_s,
    }
    print(json.dumps(results["forward"]), flush=True)
    results["parts_per_layer"] = _parts(torch, forward, inputs, packed, mask)
    print(json.dumps(results["parts_per_layer"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))  # kept if the compile below is cut short
    began = time.perf_counter()
    try:
        compiled = torch.compile(forward.packed, dynamic=False)
        with torch.inference_mode():
            compiled(*inputs, MAX_LEN)  # compiles
            compile_s = time.perf_counter() - began
            compiled_ms = _time_ms(torch, lambda: compiled(*inputs, MAX_LEN))
            difference = float((compiled(*inputs, MAX_LEN) - forward.packed(*inputs, MAX_LEN)).abs().max())
        results["compiled"] = {
            "mode": "default (inductor), dynamic=False, one token count",
            "compile_s": compile_s,
            "ms": compiled_ms,
            "fraction_of_ceiling": request_flops / (compiled_ms / 1e3) / ceiling.flops_per_s,
            "max_abs_logit_diff_vs_eager": difference,
        }
    except Exception as error:  # record why compile could not run here
        results["compiled"] = {"error": f"{type(error).__name__}: {error}"[:2000]}
    print(json.dumps(results["compiled"]), flush=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
