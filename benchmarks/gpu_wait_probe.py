"""What a host thread pays while it waits for the GPU: CUDA's default wait against a blocking-sync event.

The gateway's engine thread waits for every batch. This probe queues a fixed GPU busy-wait
(`torch.cuda._sleep`, no memory traffic) on a stream, `--calls` times per mode, and records the waiting
thread's CPU time (`time.thread_time`) against the wall time of each wait:

- `stream_synchronize`: `stream.synchronize()`, what the graph engines did before;
- `blocking_event`: `infopt.engines.cuda_wait.wait_for` (cudaEventBlockingSync), what they do now;
- `copy_to_host`: a device-to-host `.cpu()` behind the work (the HF engines' implicit wait before);
- `to_numpy`: `infopt.engines.cuda_wait.to_numpy` (what they do now).

    python -m benchmarks.gpu_wait_probe --out OUT.json [--gpu-ms 5] [--calls 200]     (CUDA only)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def _cycles_per_ms(torch: Any, stream: Any) -> float:
    """GPU clock cycles of `torch.cuda._sleep` per millisecond, measured (clocks vary by card and load)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    cycles = 10_000_000
    with torch.cuda.stream(stream):
        torch.cuda._sleep(cycles)  # warm-up
        start.record(stream)
        torch.cuda._sleep(cycles)
        end.record(stream)
    end.synchronize()
    return cycles / start.elapsed_time(end)


def _measure(torch: Any, stream: Any, cycles: int, calls: int, wait: Any) -> dict[str, float]:
    cpu, wall = [], []
    for _ in range(calls):
        with torch.cuda.stream(stream):
            torch.cuda._sleep(cycles)
            tensor = torch.ones(1, device="cuda")
        t0, c0 = time.perf_counter(), time.thread_time()
        wait(tensor)
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - t0)
    return {
        "wall_ms_median": round(float(np.median(wall)) * 1000, 4),
        "thread_cpu_ms_median": round(float(np.median(cpu)) * 1000, 4),
        "cpu_per_wall": round(float(np.sum(cpu) / np.sum(wall)), 4),
    }


def main() -> None:
    import torch

    from infopt.engines.cuda_wait import to_numpy, wait_for
    from infopt.fingerprint import collect

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gpu-ms", type=float, default=5.0, help="GPU work per call (a batch's replay)")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_wait_probe needs a CUDA GPU")
    stream = torch.cuda.Stream()
    cycles = int(_cycles_per_ms(torch, stream) * args.gpu_ms)

    def copy_to_host(tensor: Any) -> Any:
        with torch.cuda.stream(stream):
            return tensor.cpu().numpy()

    def blocking(tensor: Any) -> Any:
        with torch.cuda.stream(stream):
            return to_numpy(tensor)

    modes = {
        "stream_synchronize": lambda tensor: stream.synchronize(),
        "blocking_event": lambda tensor: wait_for(stream),
        "copy_to_host": copy_to_host,
        "to_numpy": blocking,
    }
    results = {
        "benchmark": "gpu_wait_probe",
        "method": __doc__.split("\n\n")[1].replace("\n", " "),
        "gpu_ms_per_call": args.gpu_ms,
        "calls": args.calls,
        "modes": {name: _measure(torch, stream, cycles, args.calls, wait) for name, wait in modes.items()},
        "fingerprint": collect("cuda").model_dump(mode="json"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results["modes"]), flush=True)


if __name__ == "__main__":
    main()
