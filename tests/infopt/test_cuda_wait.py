"""infopt.engines.cuda_wait: values come back unchanged; on a GPU the waiting thread sleeps."""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from infopt.engines.cuda_wait import to_numpy, wait_for  # noqa: E402


def test_a_host_tensor_comes_back_as_its_values() -> None:
    tensor = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7
    result = to_numpy(tensor)
    assert isinstance(result, np.ndarray)
    np.testing.assert_array_equal(result, tensor.numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the lent device)")
def test_waiting_for_the_gpu_leaves_the_thread_asleep() -> None:
    stream = torch.cuda.Stream()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    values = torch.full((4,), 1.5, device="cuda")
    torch.cuda._sleep(1000)  # every kernel below loaded before the timed part (a lazy module load blocks)
    (values * 2).cpu()
    with torch.cuda.stream(stream):
        start.record(stream)
        torch.cuda._sleep(50_000_000)
        end.record(stream)
        values = values * 2
    began_wall, began_cpu = time.perf_counter(), time.thread_time()
    event = wait_for(stream)
    wall, cpu = time.perf_counter() - began_wall, time.thread_time() - began_cpu
    assert end.query(), "wait_for returned before the stream's work ran"
    assert wall > 0.005, f"the GPU work took {start.elapsed_time(end):.2f} ms: too short to tell sleep from spin"
    assert cpu < 0.5 * wall, f"the thread used {cpu * 1000:.2f} ms of CPU in a {wall * 1000:.2f} ms wait"
    assert wait_for(stream, event) is event  # reused, not a new event per wait
    with torch.cuda.stream(stream):
        np.testing.assert_array_equal(to_numpy(values), np.full(4, 3.0, dtype=np.float32))
