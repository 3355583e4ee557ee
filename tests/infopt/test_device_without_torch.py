"""params.device for the ONNX Runtime engine where torch is not installed (the gateway image has none)."""

from __future__ import annotations

import importlib.util
from typing import Any

import onnxruntime
import pytest

from infopt import device
from infopt.device import DeviceError, engine_device


@pytest.fixture
def without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "torch" else real(name, *args, **kwargs)

    monkeypatch.setattr(device.importlib.util, "find_spec", find_spec)

    def no_torch(setting: str) -> str:
        raise AssertionError("resolve_device (which imports torch) was called")

    monkeypatch.setattr(device, "resolve_device", no_torch)


@pytest.mark.usefixtures("without_torch")
@pytest.mark.parametrize(
    ("setting", "providers", "expected"),
    [
        ("auto", ["CPUExecutionProvider"], "cpu"),
        ("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"], "cpu"),
        ("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"),
        ("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"),
    ],
)
def test_onnxruntime_device_comes_from_its_providers_without_torch(
    monkeypatch: pytest.MonkeyPatch, setting: str, providers: list[str], expected: str
) -> None:
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: providers)
    assert engine_device(setting, "onnxruntime") == expected


@pytest.mark.usefixtures("without_torch")
def test_cuda_without_a_cuda_provider_is_an_error_naming_the_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(DeviceError, match=r"params.device is 'cuda'.*\['CPUExecutionProvider'\].*onnxruntime-gpu"):
        engine_device("cuda", "onnxruntime")
    with pytest.raises(DeviceError, match="allowed: auto, cpu, cuda"):
        engine_device("tpu", "onnxruntime")
