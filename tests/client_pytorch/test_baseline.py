"""The centralized baseline trains on the whole training set and reports test metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from orchard.client.baseline import BaselineEpoch
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
    cifar: GeneratedCifar, cifar_data_dir: Path
) -> None:
    settings = BaselineSettings(
        model_id="cifar10-cnn",
        data=cifar.settings(cifar_data_dir, download=False, val_fraction=0.0),
        training=TrainConfig(epochs=2, batch_size=10, learning_rate=0.01, momentum=0.9),
    )
    lines: list[str] = []
    seen: list[BaselineEpoch] = []
    result = run_baseline(settings, device="cpu", report=lines.append, on_epoch=seen.append)
    assert result.train.num_examples == 100  # the whole training set
    assert seen == list(result.epochs)  # each epoch as it ended, in order
    assert result.test.num_examples == 20
    assert lines[0].startswith("centralized baseline: cifar10-cnn on cifar10 (pytorch, cpu)")
    assert [line.split(":")[0] for line in lines[1:3]] == ["epoch 1/2", "epoch 2/2"]
    assert [e.val.num_examples for e in result.epochs] == [0, 0]  # no validation share
    assert lines[3].startswith("test evaluation on 20 examples: cross-entropy ")
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
        data=mnist.settings(),  # val_fraction 0.1: 20 examples validate each epoch
        training=TrainConfig(epochs=3, batch_size=16, learning_rate=0.1, momentum=0.9),
    )
    result = run_baseline(settings, device="cpu", report=lambda line: None)
    assert result.train.num_examples == 180
    assert [e.val.num_examples for e in result.epochs] == [20, 20, 20]
    assert result.test.accuracy > 0.8  # chance is 0.1


def test_a_model_and_dataset_mismatch_fails_before_training(mnist: GeneratedMnist) -> None:
    settings = BaselineSettings(
        model_id="cifar10-cnn", data=mnist.settings(), training=TUTORIAL_TRAINING
    )
    with pytest.raises(DataError, match="cifar10-cnn"):
        run_baseline(settings, device="cpu")
