"""Choosing the MXNet context from --device auto|cpu|cuda[:N] (gpu[:N] too)."""

from __future__ import annotations

import logging

import pytest

mx = pytest.importorskip("mxnet")

from orchard_mxnet import device  # noqa: E402
from orchard_mxnet.device import DeviceError, resolve_device  # noqa: E402

pytestmark = pytest.mark.mxnet


def test_cpu_is_always_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "_gpu_count", lambda: 4)
    assert resolve_device("cpu") == mx.cpu()


def test_auto_falls_back_to_the_cpu_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(device, "_gpu_count", lambda: 0)
    with caplog.at_level(logging.INFO, logger="orchard_mxnet.device"):
        assert resolve_device("auto") == mx.cpu()
    assert "using device cpu; no GPU visible to MXNet" in caplog.text


@pytest.mark.parametrize(
    ("request_", "index"), [("auto", 0), ("gpu", 0), ("cuda", 0), ("cuda:1", 1)]
)
def test_a_visible_gpu_is_used_when_asked_for(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, request_: str, index: int
) -> None:
    monkeypatch.setattr(device, "_gpu_count", lambda: 2)
    with caplog.at_level(logging.INFO, logger="orchard_mxnet.device"):
        ctx = resolve_device(request_)
    assert ctx == mx.gpu(index)
    assert ctx.device_type == "gpu"
    assert f"using device cuda:{index} (GPU {index} of 2 visible to MXNet)" in caplog.text


@pytest.mark.parametrize("request_", ["gpu", "cuda", "gpu:0"])
def test_a_gpu_without_a_gpu_is_an_error_not_a_fallback(
    monkeypatch: pytest.MonkeyPatch, request_: str
) -> None:
    monkeypatch.setattr(device, "_gpu_count", lambda: 0)
    with pytest.raises(
        DeviceError, match=rf"--device {request_} .*asks for a GPU.*MXNet sees no GPU.*--device cpu"
    ):
        resolve_device(request_)


def test_a_gpu_index_beyond_the_count_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "_gpu_count", lambda: 1)
    with pytest.raises(DeviceError, match=r"only 1 CUDA devices \(cuda:0\.\.cuda:0\)"):
        resolve_device("gpu:3")


def test_unknown_devices_are_refused_with_the_choices() -> None:
    with pytest.raises(DeviceError, match=r"'tpu'.*auto, cpu, cuda, cuda:N"):
        resolve_device("tpu")


def test_this_machine_needs_no_gpu_for_auto() -> None:
    """The real probe runs (CPU-only wheel here) and auto never fails."""
    ctx = resolve_device("auto")
    assert ctx.device_type in {"cpu", "gpu"}
    assert (ctx.device_type == "gpu") == (mx.context.num_gpus() > 0)
