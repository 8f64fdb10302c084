"""Device resolution: auto, cpu, and a clear error for a GPU that is not there."""

from __future__ import annotations

import logging

import pytest
import torch

from orchard_pytorch.device import DeviceError, resolve_device


def test_cpu_is_always_available(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="orchard_pytorch.device"):
        assert resolve_device("cpu") == torch.device("cpu")
    assert "using device cpu" in caplog.text


def test_auto_picks_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_picks_cuda_when_available() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.parametrize("request_text", ["cuda", "cuda:0", "CUDA", "gpu"])
def test_cuda_without_cuda_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, request_text: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError) as info:
        resolve_device(request_text)
    message = str(info.value)
    assert f"--device {request_text}" in message
    assert "ORCHARD_DEVICE" in message
    assert "CUDA" in message
    assert "--device cpu" in message


def test_gpu_is_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"Fake GPU {index}")
    assert resolve_device("gpu:1") == torch.device("cuda", 1)
    assert resolve_device("CUDA") == torch.device("cuda", 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_this_cpu_only_machine_is_refused() -> None:
    with pytest.raises(DeviceError, match="asks for a GPU"):
        resolve_device("cuda")


def test_cuda_index_beyond_the_device_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DeviceError, match=r"only 2 CUDA devices \(cuda:0\.\.cuda:1\)"):
        resolve_device("cuda:5")


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", "cuda:-1", ""])
def test_unknown_device_names_the_choices(bad: str) -> None:
    with pytest.raises(DeviceError, match="auto, cpu, cuda, cuda:N"):
        resolve_device(bad)
