"""The engine contract shared by the benchmark stage and the gateway: what is measured is what is served."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class EngineError(RuntimeError):
    """The engine failed on a batch; the gateway maps it to 503 for every request in that batch."""


class Engine(Protocol):
    """A loaded model that maps a padded token batch to class logits.

    input_ids and attention_mask are int64 arrays of shape (B, T); the result is float32 (B, C).
    `infer` is blocking and may be called from a worker thread, one batch at a time per instance.
    """

    name: str
    device: str

    def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...
