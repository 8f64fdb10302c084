"""Choosing the MXNet context from --device auto|cpu|gpu."""

from __future__ import annotations

import logging

import pytest

mx = pytest.importorskip("mxnet")

from orchard_mxnet import device  # noqa: E402
from orchard_mxnet.device import DeviceError, resolve_context  # noqa: E402

pytestmark = pytest.mark.mxnet


def test_cpu_is_always_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "_gpu_count", lambda: 4)
    assert resolve_context("cpu") == mx.cpu()


def test_auto_falls_back_to_the_cpu_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(device, "_gpu_count", lambda: 0)
    with caplog.at_level(logging.INFO, logger="orchard_mxnet.device"):
        assert resolve_context("auto") == mx.cpu()
    assert "no GPU visible to MXNet: training on the CPU" in caplog.text


@pytest.mark.parametrize("request_", ["auto", "gpu"])
def test_a_visible_gpu_is_used_when_asked_for(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, request_: str
) -> None:
    monkeypatch.setattr(device, "_gpu_count", lambda: 2)
    with caplog.at_level(logging.INFO, logger="orchard_mxnet.device"):
        ctx = resolve_context(request_)
    assert ctx == mx.gpu(0)
    assert ctx.device_type == "gpu"
    assert "GPU 0 of 2" in caplog.text


def test_gpu_without_a_gpu_is_an_error_not_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "_gpu_count", lambda: 0)
    with pytest.raises(DeviceError, match=r"--device gpu.*no GPU.*--device auto or cpu"):
        resolve_context("gpu")


def test_unknown_devices_are_refused_with_the_choices() -> None:
    with pytest.raises(DeviceError, match=r"'tpu'.*auto, cpu, gpu"):
        resolve_context("tpu")


def test_this_machine_needs_no_gpu_for_auto() -> None:
    """The real probe runs (CPU-only wheel here) and auto never fails."""
    ctx = resolve_context("auto")
    assert ctx.device_type in {"cpu", "gpu"}
    assert (ctx.device_type == "gpu") == (mx.context.num_gpus() > 0)
