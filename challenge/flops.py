"""Analytic FLOPs of a BERT sequence classifier at a given padded length, counted from its config.

Only matrix multiplications are counted (2 FLOPs per multiply-add); embeddings gathers, softmax,
LayerNorm, GELU and residual adds are memory-bound and left out, as a roofline against the matmul rate
should. For one sequence padded to T tokens, with hidden size H, per layer l the attention width
A_l = heads_l x head_dim (smaller after head pruning) and FFN width I_l:

    QKV projections       2 * T * H * 3 A_l
    attention scores      2 * T * T * A_l      (Q K^T)
    attention x values    2 * T * T * A_l
    output projection     2 * T * A_l * H
    FFN                   2 * T * H * I_l * 2  (up and down)

plus the pooler (2 H^2) and the classifier (2 H C) on the [CLS] token. bert-base (H 768, 12 layers,
A 768, I 3072) at T = 64: 11,022,630,912 in the encoder + 1,179,648 pooler + 2 x 768 x C classifier.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ArchitectureError(ValueError):
    """The config is not a BERT encoder this count understands; the message names the field."""


@dataclass(frozen=True)
class BertShape:
    """The matmul dimensions of a BERT classifier, per layer (pruning makes layers differ)."""

    hidden: int
    attention_widths: tuple[int, ...]  # heads x head_dim per layer
    ffn_widths: tuple[int, ...]  # intermediate size per layer
    num_labels: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BertShape:
        """From a config.json dict (HF BertConfig), honouring `pruned_heads` and `intermediate_size`."""
        if config.get("model_type", "bert") != "bert":
            raise ArchitectureError(f"model_type {config.get('model_type')!r}: the FLOP count covers 'bert' only")
        try:
            hidden = int(config["hidden_size"])
            layers = int(config["num_hidden_layers"])
            heads = int(config["num_attention_heads"])
            intermediate = int(config["intermediate_size"])
        except KeyError as missing:
            raise ArchitectureError(f"config has no {missing.args[0]!r}") from None
        head_dim = hidden // heads
        pruned = {int(layer): len(set(cut)) for layer, cut in (config.get("pruned_heads") or {}).items()}
        labels = config.get("id2label") or {}
        num_labels = len(labels) if labels else int(config.get("num_labels", 2))
        return cls(
            hidden=hidden,
            attention_widths=tuple((heads - pruned.get(layer, 0)) * head_dim for layer in range(layers)),
            ffn_widths=(intermediate,) * layers,
            num_labels=num_labels,
        )

    def flops(self, tokens: float) -> float:
        """Matmul FLOPs of one sequence padded to `tokens` (fractional: a mean padded length)."""
        t, h = float(tokens), self.hidden
        encoder = sum(
            2 * t * h * 3 * a + 4 * t * t * a + 2 * t * a * h + 4 * t * h * i
            for a, i in zip(self.attention_widths, self.ffn_widths, strict=True)
        )
        return encoder + 2 * h * h + 2 * h * self.num_labels


def roofline_fraction(throughput_rps: float, flops_per_request: float, matmul_flops_per_s: float) -> float:
    """Achieved matmul FLOP rate (throughput x FLOPs per request) over the measured matmul rate."""
    return throughput_rps * flops_per_request / matmul_flops_per_s
