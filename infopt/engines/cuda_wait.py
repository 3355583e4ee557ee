"""Waiting for the GPU without spinning a host core.

CUDA's default wait (a stream synchronize, or the implicit one of a device-to-host copy) spins the calling
thread for as long as the GPU works when the process has one context on a host with more cores than
contexts. An engine thread in a gateway then holds a core for its whole batch, a core the HTTP workers and
the admission loop need. A blocking-sync event (cudaEventBlockingSync) lets the thread sleep until the GPU
signals; the cost is the wake-up, small beside a batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def wait_for(stream: Any, event: Any | None = None) -> Any:
    """Sleep until the work queued on `stream` so far has run; returns the event (pass it again to reuse)."""
    import torch

    if event is None:
        event = torch.cuda.Event(blocking=True)
    event.record(stream)
    event.synchronize()
    return event


def to_numpy(tensor: Any) -> np.ndarray:
    """A torch tensor's values on the host; a CUDA tensor's producer is waited for asleep, then copied."""
    if tensor.is_cuda:
        import torch

        wait_for(torch.cuda.current_stream(tensor.device))
    return tensor.cpu().numpy()
