"""A static-shape BERT classifier forward over a Hugging Face model's weights, safe to capture in a CUDA graph.

The pipeline serves `BertForSequenceClassification` through HF's forward, which decides data-dependent
things on the host (e.g. dropping an all-ones attention mask) and launches many small kernels. This module
runs the same computation as plain tensor ops with no host synchronisation, so a whole forward can be
captured once per (batch, padded length) and replayed:

- embeddings: word[ids] + (position + token type 0)[:T], LayerNorm;
- per layer: one fused QKV matmul (q, k, v weights concatenated), scaled-dot-product attention with an
  additive padding mask, output projection + residual + LayerNorm, FFN up (+ GELU, fused into the matmul's
  epilogue on CUDA for fp16/bf16 via `torch._addmm_activation`) and down + residual + LayerNorm;
- pooler (tanh) and classifier on [CLS], logits in float32.

`StaticBert.packed` runs the same layers on a batch's tokens packed end to end with no padding (varlen
flash attention over each row's own tokens, `cu_seqlens` as flash-attn takes them): every matmul then
runs on exactly the tokens the requests sent, which is what the roofline counts as work.

Linear layers are one of: dense (fp32/fp16/bf16), fp8 (float8_e4m3fn weights with per-tensor scales, the
fp8 variant's recipe, activations scaled per tensor at run time, `torch._scaled_mm`), or 2:4
semi-structured sparse (the modules a variant's `sparsity.json` lists, CUDA only). Heads removed by
structured pruning are honoured (each layer's attention width is read from its weights).
`check_against_hf` compares the logits with the HF forward: an engine refuses to serve if they disagree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

FP8_MAX = 448.0  # largest finite float8_e4m3fn
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


class ForwardError(ValueError):
    """The model cannot run through the static forward; the message names the module or setting."""


class DenseLinear:
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight, self.bias = weight, bias  # (N, K), (N,)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # (M, K) -> (M, N)
        return F.linear(x, self.weight, self.bias)

    def gelu(self, x: torch.Tensor) -> torch.Tensor:
        """linear + GELU in one cuBLASLt call (its epilogue GELU is the tanh approximation)."""
        if self.bias is None:  # the epilogue adds a bias; BERT's FFN always has one
            return F.gelu(self(x), approximate="tanh")
        return torch._addmm_activation(self.bias, x, self.weight.t(), use_gelu=True)


class Fp8Linear:
    """FP8 weights (per-tensor scale = amax / 448, as the fp8 variant builds them) and per-call activation scales."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype) -> None:
        weight = weight.float()
        scale = weight.abs().amax().clamp(min=1e-12) / FP8_MAX
        self.weight_t = (weight / scale).to(torch.float8_e4m3fn).t()  # (K, N), column-major as _scaled_mm wants
        self.weight_scale = scale.to(torch.float32)
        self.bias = bias.to(out_dtype) if bias is not None else None
        self.out_dtype = out_dtype
        self.fast_accum = weight.device.type == "cuda"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0]
        pad = (-rows) % 16  # _scaled_mm wants M % 16 == 0; the graph engine's buckets already give that
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        amax = x.abs().amax().float().clamp(min=1e-12)
        quantized = (x * (FP8_MAX / amax).to(x.dtype)).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        out = torch._scaled_mm(
            quantized,
            self.weight_t,
            scale_a=amax / FP8_MAX,
            scale_b=self.weight_scale,
            bias=self.bias,
            out_dtype=self.out_dtype,
            use_fast_accum=self.fast_accum,
        )
        return out[:rows] if pad else out


class SparseLinear(DenseLinear):
    """A 2:4-pruned weight in torch's semi-structured sparse format (sparse tensor cores)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        from torch.sparse import to_sparse_semi_structured

        super().__init__(to_sparse_semi_structured(weight), bias)


Linear = DenseLinear | Fp8Linear | SparseLinear


def varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int
) -> torch.Tensor:
    """(N, heads, d) packed q, k, v -> (N, heads, d): each row of `cu_seqlens` attends only within itself.

    CUDA: flash attention's variable-length kernel (no host synchronisation, so it can be captured). Tokens
    past `cu_seqlens[-1]` belong to no row and their outputs are left unspecified (their rows never mix with
    real ones: every other op is row-wise). CPU (tests, the engines' emulation): the same through SDPA with a
    block-diagonal mask, quadratic in N, so for small checks only."""
    if q.device.type == "cuda":
        return _cuda_varlen(q, k, v, cu_seqlens, max_len)
    tokens = q.shape[0]
    row = torch.searchsorted(cu_seqlens[1:].to(torch.int64), torch.arange(tokens, device=q.device), right=True)
    same_row = row[:, None] == row[None, :]  # (N, N); tokens past the last row form one block of their own
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], attn_mask=same_row
    )
    return out[0].transpose(0, 1)


def _cuda_varlen(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int
) -> torch.Tensor:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # torch < 2.10: the aten op the public API wraps
        out = torch.ops.aten._flash_attention_forward(
            q, k, v, cu_seqlens, cu_seqlens, max_len, max_len, 0.0, False, False
        )
        return out[0]
    result = varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len)
    return result[0] if isinstance(result, tuple) else result


def _parameter(module: Any, name: str, where: str) -> torch.Tensor:
    value = getattr(module, name, None)
    if not isinstance(value, torch.Tensor):
        raise ForwardError(f"{where}.{name} is missing: not a BERT layout this forward knows")
    return value.detach()


def _sub(module: Any, path: str) -> Any:
    for part in path.split("."):
        if not hasattr(module, part):
            raise ForwardError(f"the model has no {path!r} (at {part!r}): not a BertForSequenceClassification")
        module = getattr(module, part)
    return module


class StaticBert:
    """The forward described in the module docstring, built from a loaded HF BERT classifier."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: str,
        precision: str,
        linear: str = "dense",
        sparse_modules: frozenset[str] = frozenset(),
        fused_gelu: bool | None = None,
    ) -> None:
        config: Any = (
            model.config
        )  # transformers' PretrainedConfig (nn.Module's __getattr__ types it as Tensor | Module)
        if getattr(config, "model_type", None) != "bert":
            raise ForwardError(f"model_type {getattr(config, 'model_type', None)!r}: the static forward is BERT only")
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise ForwardError(f"position_embedding_type {config.position_embedding_type!r}: only 'absolute'")
        if config.hidden_act not in ACTIVATIONS:
            raise ForwardError(f"hidden_act {config.hidden_act!r}: supported {sorted(ACTIVATIONS)}")
        if linear not in ("dense", "fp8", "sparse24"):
            raise ForwardError(f"linear {linear!r}: one of dense, fp8, sparse24")
        if linear == "fp8" and precision != "bf16":
            raise ForwardError("fp8 linears run with bf16 activations: precision must be bf16")
        self.device = device
        self.dtype = DTYPES[precision]
        self.approximate = ACTIVATIONS[config.hidden_act]
        self.linear_kind = linear
        if fused_gelu is None:
            fused_gelu = device == "cuda" and self.dtype != torch.float32 and linear == "dense"
        self.fused_gelu = fused_gelu
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.hidden = config.hidden_size
        self.eps = config.layer_norm_eps
        self.mask_value = torch.finfo(self.dtype).min
        self.sparse_linears = 0  # linears served by the 2:4 sparse kernels

        def tensor(value: torch.Tensor) -> torch.Tensor:
            return value.to(device=device, dtype=self.dtype).contiguous()

        def make_linear(names: list[str], weights: list[torch.Tensor], biases: list[torch.Tensor | None]) -> Linear:
            weight = torch.cat([w.detach().float() for w in weights])
            bias = None if biases[0] is None else torch.cat([b.detach().float() for b in biases if b is not None])
            if linear == "fp8":
                return Fp8Linear(weight.to(device), None if bias is None else bias.to(device), self.dtype)
            if linear == "sparse24" and all(name in sparse_modules for name in names):
                try:
                    sparse = SparseLinear(tensor(weight), None if bias is None else tensor(bias))
                except (RuntimeError, ValueError):  # a shape the sparse kernels refuse stays dense
                    pass
                else:
                    self.sparse_linears += 1
                    return sparse
            return DenseLinear(tensor(weight), None if bias is None else tensor(bias))

        prefix = "bert"
        embeddings = _sub(model, f"{prefix}.embeddings")
        self.word = tensor(_parameter(embeddings.word_embeddings, "weight", "embeddings.word_embeddings"))
        position = _parameter(embeddings.position_embeddings, "weight", "embeddings.position_embeddings")
        token_type = _parameter(embeddings.token_type_embeddings, "weight", "embeddings.token_type_embeddings")
        self.position_type = tensor(position + token_type[0])  # (P, H): token type 0 for every position
        self.embed_norm = (tensor(embeddings.LayerNorm.weight.detach()), tensor(embeddings.LayerNorm.bias.detach()))
        self.layers: list[dict[str, Any]] = []
        for index, layer in enumerate(_sub(model, f"{prefix}.encoder.layer")):
            where = f"{prefix}.encoder.layer.{index}"
            attention = _sub(layer, "attention.self")
            names = [f"{where}.attention.self.{part}" for part in ("query", "key", "value")]
            parts = [getattr(attention, part) for part in ("query", "key", "value")]
            width = parts[0].weight.shape[0]
            if width % self.head_dim:
                raise ForwardError(f"{where}: attention width {width} is not a multiple of head_dim {self.head_dim}")
            out, inter, down = layer.attention.output, layer.intermediate, layer.output
            self.layers.append(
                {
                    "heads": width // self.head_dim,
                    "width": width,
                    "qkv": make_linear(names, [p.weight.detach() for p in parts], [p.bias for p in parts]),
                    "out": make_linear(
                        [f"{where}.attention.output.dense"], [out.dense.weight.detach()], [out.dense.bias]
                    ),
                    "norm1": (tensor(out.LayerNorm.weight.detach()), tensor(out.LayerNorm.bias.detach())),
                    "up": make_linear(
                        [f"{where}.intermediate.dense"], [inter.dense.weight.detach()], [inter.dense.bias]
                    ),
                    "down": make_linear([f"{where}.output.dense"], [down.dense.weight.detach()], [down.dense.bias]),
                    "norm2": (tensor(down.LayerNorm.weight.detach()), tensor(down.LayerNorm.bias.detach())),
                }
            )
        pooler = _sub(model, f"{prefix}.pooler.dense")
        classifier = _sub(model, "classifier")
        # pooler and classifier stay in the activation dtype (the fp8 variant keeps its head in bf16 too)
        self.pooler = DenseLinear(tensor(pooler.weight.detach()), tensor(pooler.bias.detach()))
        self.classifier = DenseLinear(tensor(classifier.weight.detach()), tensor(classifier.bias.detach()))
        self.num_labels = classifier.weight.shape[0]
        if self.fused_gelu:
            self._check_fused_gelu()

    def _check_fused_gelu(self) -> None:
        """Fall back to linear + GELU where this torch build has no fused GELU epilogue for these shapes."""
        probe = torch.zeros(16, self.hidden, device=self.device, dtype=self.dtype)
        try:
            self.layers[0]["up"].gelu(probe)
        except (RuntimeError, NotImplementedError):
            self.fused_gelu = False

    def _norm(self, x: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.layer_norm(x, (self.hidden,), weights[0], weights[1], self.eps)

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 ids and mask on the device -> (B, C) float32 logits; no host synchronisation."""
        batch, tokens = ids.shape
        x = self._norm(F.embedding(ids, self.word) + self.position_type[:tokens], self.embed_norm)  # (B, T, H)
        x = x.reshape(batch * tokens, self.hidden)  # (M, H)
        keep = mask[:, None, None, :].to(self.dtype)  # (B, 1, 1, T)
        bias = ((1.0 - keep) * self.mask_value).expand(batch, 1, tokens, tokens)  # additive, as HF builds it
        for layer in self.layers:
            heads, width = layer["heads"], layer["width"]
            qkv = layer["qkv"](x).reshape(batch, tokens, 3, heads, self.head_dim)  # sparse outputs may be strided
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, d)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, heads, T, d)
            context = context.transpose(1, 2).reshape(batch * tokens, width)
            x = self._layer_tail(layer, context, x)
        cls = x.view(batch, tokens, self.hidden)[:, 0]  # (B, H)
        return self._head(cls)

    def _head(self, cls: torch.Tensor) -> torch.Tensor:
        pooled = torch.tanh(self.pooler(cls))
        return self.classifier(pooled).float()  # (B, C)

    def _layer_tail(self, layer: dict[str, Any], context: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Output projection + residual + LayerNorm, then the FFN + residual + LayerNorm, on (M, H) rows."""
        x = self._norm(layer["out"](context) + x, layer["norm1"])
        if self.fused_gelu:
            up = layer["up"].gelu(x)
        else:
            up = F.gelu(layer["up"](x), approximate=self.approximate)
        return self._norm(layer["down"](up) + x, layer["norm2"])

    def packed(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        cu_seqlens: torch.Tensor,
        cls_rows: torch.Tensor,
        max_len: int,
    ) -> torch.Tensor:
        """Packed tokens -> (S, C) float32 logits, no host synchronisation.

        ids, positions: (N,) int64, the rows' tokens end to end (their position within their row);
        cu_seqlens: (S + 1,) int32 row boundaries (rows past the batch have length 0); cls_rows: (S,) int64,
        each row's first token; max_len: the longest row any call may hold (sizes flash's grid)."""
        tokens = ids.shape[0]
        x = self._norm(F.embedding(ids, self.word) + F.embedding(positions, self.position_type), self.embed_norm)
        for layer in self.layers:
            heads = layer["heads"]
            qkv = layer["qkv"](x)
            if qkv.stride(-1) != 1:  # 2:4 sparse kernels return column-major; flash wants unit-stride rows
                qkv = qkv.contiguous()
            q, k, v = qkv.reshape(tokens, 3, heads, self.head_dim).unbind(1)  # each (N, heads, d)
            context = varlen_attention(q, k, v, cu_seqlens, max_len).reshape(tokens, layer["width"])
            x = self._layer_tail(layer, context, x)
        return self._head(x.index_select(0, cls_rows))


def sparse_module_names(model_dir: Path) -> frozenset[str]:
    """The Linear modules a 2:4 variant lists in sparsity.json (empty when the folder has none)."""
    from infopt.engines.torch_engine import SPARSITY_FILE

    marker = Path(model_dir) / SPARSITY_FILE
    if not marker.is_file():
        return frozenset()
    spec = json.loads(marker.read_text())
    if spec.get("pattern") != "2:4":
        raise ForwardError(f"{marker}: pattern {spec.get('pattern')!r} is not '2:4'")
    return frozenset(spec["modules"])


def load_hf(model_dir: Path) -> torch.nn.Module:
    """The HF classifier in fp32 on the CPU (weights are cast by the static forward)."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=torch.float32).eval()


def check_against_hf(
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    model: torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
) -> float:
    """Max |logit difference| between the static forward and the HF forward (fp32, CPU) on one batch."""
    with torch.inference_mode():
        reference = model(input_ids=ids.cpu(), attention_mask=mask.cpu()).logits.float()
        logits = forward(ids, mask).cpu()
    return float((logits - reference).abs().max())
