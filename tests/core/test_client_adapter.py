"""The framework-neutral half of the adapter contract: device selection and results.

The protocol itself and the generic client are checked against every real
adapter by ``tests/contract``.
"""

from __future__ import annotations

import dataclasses

import pytest

from orchard.client.adapter import (
    DEVICE_CHOICES,
    DeviceError,
    TrainResult,
    fit_metrics,
    select_gpu,
)
from orchard.client.training import EpochStats

NO_GPU = "this build has no CUDA support"


@pytest.mark.parametrize(
    ("request_text", "gpus", "expected"),
    [
        ("auto", 0, None),
        ("auto", 2, 0),
        ("cpu", 2, None),
        (" CPU ", 0, None),
        ("cuda", 1, 0),
        ("gpu", 1, 0),
        ("cuda:1", 2, 1),
        ("GPU:1", 2, 1),
    ],
)
def test_select_gpu(request_text: str, gpus: int, expected: int | None) -> None:
    assert select_gpu(request_text, gpu_count=gpus, no_gpu_reason=NO_GPU) == expected


@pytest.mark.parametrize("request_text", ["cuda", "gpu", "cuda:0"])
def test_a_gpu_request_without_a_gpu_says_why_and_what_to_do(request_text: str) -> None:
    with pytest.raises(DeviceError) as caught:
        select_gpu(request_text, gpu_count=0, no_gpu_reason=NO_GPU)
    assert str(caught.value) == (
        f"--device {request_text} (ORCHARD_DEVICE) asks for a GPU, but {NO_GPU}; "
        "use --device auto or --device cpu"
    )


def test_a_gpu_index_beyond_the_count_lists_the_valid_ones() -> None:
    with pytest.raises(DeviceError, match=r"only 2 CUDA devices \(cuda:0\.\.cuda:1\)"):
        select_gpu("cuda:2", gpu_count=2, no_gpu_reason=NO_GPU)


@pytest.mark.parametrize("request_text", ["tpu", "", "cuda:", "cuda:-1", "cuda:x", "mps"])
def test_unknown_requests_name_the_choices(request_text: str) -> None:
    with pytest.raises(DeviceError, match=r"is not one of auto, cpu, cuda, cuda:N"):
        select_gpu(request_text, gpu_count=4, no_gpu_reason=NO_GPU)
    assert DEVICE_CHOICES == ("auto", "cpu", "cuda", "cuda:N")


def test_train_results_are_frozen_values() -> None:
    epoch = EpochStats(epoch=1, epochs=1, loss=0.5, accuracy=0.9, examples_per_second=10.0)
    result = TrainResult(num_examples=3, loss=0.5, accuracy=0.9, history=(epoch,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.loss = 0.1  # type: ignore[misc]
    assert result == TrainResult(num_examples=3, loss=0.5, accuracy=0.9, history=(epoch,))


def _epoch(epoch: int, examples_per_second: float) -> EpochStats:
    return EpochStats(
        epoch=epoch, epochs=2, loss=0.5, accuracy=0.9, examples_per_second=examples_per_second
    )


def test_fit_metrics_rate_every_epoch_over_loop_time_and_over_the_whole_fit() -> None:
    # 100 examples per epoch: 1 s at 100/s, then 0.25 s at 400/s -> 200 examples in 1.25 s.
    result = TrainResult(
        num_examples=100, loss=0.25, accuracy=0.75, history=(_epoch(1, 100.0), _epoch(2, 400.0))
    )
    metrics = fit_metrics(result, fit_seconds=2.0, fit_cpu_seconds=1.6)
    assert metrics == {
        "train_loss": 0.25,
        "train_accuracy": 0.75,
        "train_examples_per_second": 160.0,  # not the mean of the epochs' rates (250)
        "fit_examples_per_second": 100.0,
        "fit_cpu_examples_per_second": 125.0,
    }


def test_fit_metrics_leave_out_a_rate_whose_time_was_too_short_to_measure() -> None:
    instant = TrainResult(
        num_examples=10, loss=0.1, accuracy=1.0, history=(_epoch(1, float("inf")),)
    )
    metrics = fit_metrics(instant, fit_seconds=0.0, fit_cpu_seconds=0.0)
    assert metrics == {"train_loss": 0.1, "train_accuracy": 1.0}
