"""Datasets as normalized batches of tensors.

Reading the files, partitioning and the 90/10 split are the shared
:mod:`orchard.data.client_data`'s, tested in tests/core/test_data_client_data.py;
here: the tensors, their normalization and the batches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from orchard.data.client_data import DATASETS
from orchard.data.partition import PartitionSpec, train_val_split
from orchard_pytorch.data import ClientData, DataError, DataSettings, ImageSet, normalize
from tests.helpers.client_data import GeneratedCifar, GeneratedMnist

# --- CIFAR-10 ----------------------------------------------------------------------


def test_cifar10_is_normalized_like_the_tutorial(
    cifar: GeneratedCifar, cifar_data_dir: Path
) -> None:
    bundle = ClientData(cifar.settings(cifar_data_dir, download=False), model_id="cifar10-cnn")
    images, labels = next(iter(bundle.test.batches(8)))
    # transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) after ToTensor(), in float64.
    expected = (cifar.arrays.test_images[:8].astype(np.float64) / 255.0 - 0.5) / 0.5
    assert images.dtype == torch.float32
    assert images.shape == (8, 3, 32, 32)
    np.testing.assert_allclose(images.numpy(), expected, rtol=0, atol=1e-6)
    assert float(images.min()) >= -1.0
    assert float(images.max()) <= 1.0
    assert np.array_equal(labels.numpy(), cifar.arrays.test_labels[:8])


# --- MNIST format ------------------------------------------------------------------


def test_mnist_is_channel_first_and_scaled_to_unit_range(mnist: GeneratedMnist) -> None:
    bundle = ClientData(mnist.settings(), model_id="mnist-cnn", seed=0)
    images, labels = next(iter(bundle.test.batches(50)))
    assert images.shape == (50, 1, 28, 28)
    assert images.dtype == torch.float32
    # Plain x/255, no mean/std: what the MXNet client feeds its models too.
    expected = mnist.arrays.test_images.astype(np.float64)[:, None] / 255.0
    np.testing.assert_allclose(images.numpy(), expected, rtol=0, atol=1e-7)
    assert np.array_equal(labels.numpy(), mnist.arrays.test_labels)


# --- the client's splits ------------------------------------------------------------


def test_the_splits_are_the_shared_client_datasets_arrays_as_tensors(
    mnist: GeneratedMnist,
) -> None:
    """Partitioning and the 90/10 split are orchard.data.client_data's (tested in
    tests/core); the bundle holds exactly those examples, as uint8/int64 tensors."""
    spec = PartitionSpec(scheme="iid", num_partitions=4, seed=5)
    bundle = ClientData(
        mnist.settings(), model_id="mnist-mlp", partition=spec, partition_id=2, seed=9
    )
    labels = mnist.arrays.train_labels.astype(np.int64)
    train_idx, val_idx = train_val_split(spec.select(labels, 2), val_fraction=0.1, seed=9)
    for split, index in (("train", train_idx), ("val", val_idx)):
        images = bundle.split(split).images
        assert images.dtype == torch.uint8
        assert images.shape == (len(index), 1, 28, 28)
        assert np.array_equal(images[:, 0].numpy(), mnist.arrays.train_images[index])
        assert bundle.split(split).labels.dtype == torch.int64
        assert np.array_equal(bundle.split(split).labels.numpy(), labels[index])
    assert len(bundle.test) == 50
    with pytest.raises(DataError, match="unknown split 'holdout'"):
        bundle.split("holdout")


def test_a_dataset_the_model_cannot_take_is_refused_before_reading(tmp_path: Path) -> None:
    settings = DataSettings(dataset="mnist", data_dir=tmp_path / "nothing-here")
    with pytest.raises(DataError, match=r"model 'cifar10-cnn' takes 3x32x32 images"):
        ClientData(settings, model_id="cifar10-cnn")


# --- batches -----------------------------------------------------------------------


def _tiny_set(n: int) -> ImageSet:
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1).repeat(28, 2).repeat(28, 3)
    return ImageSet.from_numpy(images, np.arange(n) % 10, DATASETS["mnist"])


def test_batches_cover_every_example_once_per_epoch() -> None:
    batches = _tiny_set(23).batches(5, shuffle=True, seed=1)
    assert len(batches) == 5
    epochs = []
    for _ in range(2):
        order = torch.cat([x[:, 0, 0, 0] for x, _ in batches])
        assert sorted((order * 255).round().long().tolist()) == list(range(23))
        epochs.append(order)
    assert not torch.equal(epochs[0], epochs[1])


def test_shuffling_is_reproducible_from_the_seed() -> None:
    def first_epoch(seed: int) -> torch.Tensor:
        return torch.cat([y for _, y in _tiny_set(30).batches(4, shuffle=True, seed=seed)])

    assert torch.equal(first_epoch(7), first_epoch(7))
    assert not torch.equal(first_epoch(7), first_epoch(8))


def test_unshuffled_batches_keep_the_order() -> None:
    labels = torch.cat([y for _, y in _tiny_set(12).batches(5)])
    assert labels.tolist() == [i % 10 for i in range(12)]


def test_normalize_is_per_channel() -> None:
    images = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    images[0, 1] = 0
    out = normalize(images, DATASETS["cifar10"])
    assert out[0, 0].eq(1.0).all()
    assert out[0, 1].eq(-1.0).all()
