"""The centralized baseline trains on the whole training set and reports test metrics."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from orchard_pytorch.baseline import TUTORIAL_TRAINING, BaselineSettings, run_baseline
from orchard_pytorch.data import DataError
from orchard_pytorch.train import TrainConfig
from tests.helpers.client_data import GeneratedCifar, GeneratedMnist


def test_defaults_are_the_tutorials() -> None:
    tutorial = TrainConfig(
        epochs=2, batch_size=4, learning_rate=0.001, momentum=0.9, optimizer="sgd"
    )
    assert tutorial == TUTORIAL_TRAINING


def test_cifar10_baseline_reports_test_metrics_of_the_trained_model(
    cifar: GeneratedCifar, cifar_data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = BaselineSettings(
        data=cifar.settings(cifar_data_dir, download=False, val_fraction=0.0),
        training=TrainConfig(epochs=2, batch_size=10, learning_rate=0.01, momentum=0.9),
        device="cpu",
        progress=False,
    )
    with caplog.at_level(logging.INFO):
        result = run_baseline(settings)
    assert result.train.num_examples == 100  # the whole training set
    assert result.test.num_examples == 20
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    # Recompute the test metrics from the returned model and the generated arrays
    # with the tutorial's normalization written out here.
    images = (torch.from_numpy(cifar.arrays.test_images).float() / 255 - 0.5) / 0.5
    labels = torch.from_numpy(cifar.arrays.test_labels.astype(np.int64))
    with torch.no_grad():
        logits = result.model(images)
    expected_loss = torch.nn.functional.cross_entropy(logits, labels).item()
    assert result.test.loss == pytest.approx(expected_loss, rel=1e-5)
    assert result.test.accuracy == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def test_mnist_baseline_learns_the_generated_digits(mnist: GeneratedMnist) -> None:
    settings = BaselineSettings(
        model_id="mnist-mlp",
        data=mnist.settings(),  # val_fraction 0.1, which the baseline does not use
        training=TrainConfig(epochs=3, batch_size=16, learning_rate=0.1, momentum=0.9),
        device="cpu",
        progress=False,
    )
    result = run_baseline(settings)
    assert result.train.num_examples == 200
    assert result.test.accuracy > 0.8  # chance is 0.1


def test_a_model_and_dataset_mismatch_fails_before_training(mnist: GeneratedMnist) -> None:
    settings = BaselineSettings(model_id="cifar10-cnn", data=mnist.settings(), device="cpu")
    with pytest.raises(DataError, match="cifar10-cnn"):
        run_baseline(settings)
