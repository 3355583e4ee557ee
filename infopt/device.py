"""Where work runs: params.device resolved once, the same way for the pipeline, the gateway and benchmarks."""

from __future__ import annotations

import importlib.util


class DeviceError(RuntimeError):
    """The device asked for is not present; the message names the setting and what was found."""


def resolve_device(setting: str) -> str:
    """params.device: `auto` is cuda when torch sees a GPU, else cpu; `cuda` without a GPU is an error."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise DeviceError("params.device is 'cuda' but torch.cuda.is_available() is False")
    if setting not in ("cpu", "cuda"):
        raise DeviceError(f"params.device is {setting!r}; allowed: auto, cpu, cuda")
    return setting


def onnxruntime_device(device: str) -> tuple[str, str | None]:
    """Where ONNX Runtime runs for work on `device`, and why that differs from `device` (None if not).

    On cuda without onnxruntime-gpu (no CUDAExecutionProvider) ONNX Runtime can only run on the CPU:
    accuracy can still be measured there (and is recorded as such); latency is not, since CPU numbers
    would be filed under the GPU run.
    """
    if device != "cuda":
        return device, None
    import onnxruntime as ort

    available = list(ort.get_available_providers())
    if "CUDAExecutionProvider" in available:
        return "cuda", None
    return "cpu", (
        f"device is cuda but onnxruntime {ort.__version__} has only {available} "
        "(no CUDAExecutionProvider; install onnxruntime-gpu)"
    )


def onnxruntime_only_device(setting: str) -> str:
    """params.device for ONNX Runtime where torch is not installed (the gateway image): decided from
    ONNX Runtime's own providers, since only a CUDAExecutionProvider lets it run on a GPU."""
    if setting not in ("auto", "cpu", "cuda"):
        raise DeviceError(f"params.device is {setting!r}; allowed: auto, cpu, cuda")
    if setting == "cpu":
        return "cpu"
    import onnxruntime as ort

    available = list(ort.get_available_providers())
    if "CUDAExecutionProvider" in available:
        return "cuda"
    if setting == "cuda":
        raise DeviceError(
            f"params.device is 'cuda' but onnxruntime {ort.__version__} has only {available} "
            "(no CUDAExecutionProvider; install onnxruntime-gpu)"
        )
    return "cpu"


def engine_device(setting: str, engine: str) -> str:
    """The device an in-process engine of kind `engine` runs on for params.device `setting`."""
    if engine == "onnxruntime" and importlib.util.find_spec("torch") is None:
        return onnxruntime_only_device(setting)
    device = resolve_device(setting)
    if engine == "onnxruntime":
        return onnxruntime_device(device)[0]
    return device
