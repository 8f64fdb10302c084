"""Datasets as normalized batches: CIFAR-10 tarball, MNIST IDX, download path, partitions."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from orchard.data.download import DownloadError, Resource
from orchard.data.errors import DatasetError
from orchard.data.partition import PartitionSpec
from orchard_pytorch.data import (
    DATASETS,
    DataBundle,
    DataError,
    DataSettings,
    ImageSet,
    check_compatible,
    default_dataset,
    load_split,
    normalize,
)
from tests.client_pytorch.conftest import (
    CIFAR_TARBALL,
    GeneratedCifar,
    GeneratedMnist,
    make_cifar,
    md5_of,
)
from tests.helpers.http import serve_directory

# --- CIFAR-10 ----------------------------------------------------------------------


def test_cifar10_reads_the_generated_tarball_exactly(
    cifar: GeneratedCifar, cifar_data_dir: Path
) -> None:
    settings = cifar.settings(cifar_data_dir, download=False)
    train_images, train_labels = load_split(settings, "train")
    test_images, test_labels = load_split(settings, "test")
    assert train_images.shape == (100, 3, 32, 32)
    assert train_images.dtype == np.uint8
    assert np.array_equal(train_images, cifar.arrays.train_images)
    assert np.array_equal(train_labels, cifar.arrays.train_labels.astype(np.int64))
    assert train_labels.dtype == np.int64
    assert np.array_equal(test_images, cifar.arrays.test_images)
    assert np.array_equal(test_labels, cifar.arrays.test_labels.astype(np.int64))


def test_cifar10_is_normalized_like_the_tutorial(
    cifar: GeneratedCifar, cifar_data_dir: Path
) -> None:
    bundle = DataBundle(cifar.settings(cifar_data_dir, download=False))
    images, labels = next(iter(bundle.loader("test", 8)))
    # transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) after ToTensor(), in float64.
    expected = (cifar.arrays.test_images[:8].astype(np.float64) / 255.0 - 0.5) / 0.5
    assert images.dtype == torch.float32
    assert images.shape == (8, 3, 32, 32)
    np.testing.assert_allclose(images.numpy(), expected, rtol=0, atol=1e-6)
    assert float(images.min()) >= -1.0
    assert float(images.max()) <= 1.0
    assert np.array_equal(labels.numpy(), cifar.arrays.test_labels[:8])


def test_cifar10_tarball_with_the_wrong_checksum_is_refused(
    cifar: GeneratedCifar, cifar_data_dir: Path
) -> None:
    wrong = Resource(CIFAR_TARBALL, cifar.resource.url, "md5:" + "0" * 32)
    settings = cifar.settings(cifar_data_dir, download=False, cifar10_resource=wrong)
    with pytest.raises(DatasetError, match="does not match the official checksum"):
        load_split(settings, "train")
    # verify=False uses a local (for example re-packed) file anyway.
    images, _ = load_split(replace(settings, verify=False), "train")
    assert np.array_equal(images, cifar.arrays.train_images)


def test_cifar10_downloads_from_the_resource_url_and_verifies_it(tmp_path: Path) -> None:
    served = tmp_path / "served"
    requests: list[str] = []
    with serve_directory(served, request_log=requests) as url:
        generated = make_cifar(served, n_per_batch=10, seed=2, base_url=url)
        data_dir = tmp_path / "cache"
        settings = generated.settings(data_dir)
        images, labels = load_split(settings, "train")
        assert requests == [f"/{CIFAR_TARBALL}"]
        assert np.array_equal(images, generated.arrays.train_images)
        assert np.array_equal(labels, generated.arrays.train_labels)
        # The cached file is the served one, byte for byte (md5 computed here).
        assert md5_of(data_dir / CIFAR_TARBALL) == md5_of(generated.tarball)
        # A second load uses the cache and does not reach the server.
        load_split(settings, "test")
        assert requests == [f"/{CIFAR_TARBALL}"]


def test_cifar10_downloads_from_a_mirror(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    generated = make_cifar(served, n_per_batch=10, seed=3, base_url="http://127.0.0.1:9/official")
    with serve_directory(served) as mirror:
        settings = generated.settings(tmp_path / "cache", mirror=mirror)
        images, _ = load_split(settings, "test")
    assert np.array_equal(images, generated.arrays.test_images)


def test_cifar10_checksum_mismatch_names_url_cache_and_override(
    tmp_path: Path, cifar: GeneratedCifar
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(cifar.tarball, served / CIFAR_TARBALL)
    cache = tmp_path / "cache"
    with serve_directory(served) as url:
        wrong = Resource(CIFAR_TARBALL, f"{url}/{CIFAR_TARBALL}", "md5:" + "1" * 32)
        settings = cifar.settings(cache, cifar10_resource=wrong)
        with pytest.raises(DownloadError) as info:
            load_split(settings, "train")
    message = str(info.value)
    assert f"{url}/{CIFAR_TARBALL}" in message
    assert "checksum mismatch" in message
    assert str(cache / CIFAR_TARBALL) in message
    assert "ORCHARD_DATASET_MIRROR" in message
    assert not (cache / CIFAR_TARBALL).exists()


def test_cifar10_failed_download_names_url_cache_and_override(
    tmp_path: Path, cifar: GeneratedCifar
) -> None:
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    cache = tmp_path / "cache"
    with serve_directory(empty) as url:
        settings = cifar.settings(cache, mirror=url)
        with pytest.raises(DownloadError) as info:
            load_split(settings, "train")
    message = str(info.value)
    assert f"{url}/{CIFAR_TARBALL}" in message
    assert "404" in message
    assert str(cache / CIFAR_TARBALL) in message
    assert "ORCHARD_DATASET_MIRROR" in message


# --- MNIST format ------------------------------------------------------------------


def test_mnist_is_channel_first_and_scaled_to_unit_range(mnist: GeneratedMnist) -> None:
    bundle = DataBundle(mnist.settings(), seed=0)
    images, labels = next(iter(bundle.loader("test", 50)))
    assert images.shape == (50, 1, 28, 28)
    assert images.dtype == torch.float32
    # Plain x/255, no mean/std: what the MXNet client feeds its models too.
    expected = mnist.arrays.test_images.astype(np.float64)[:, None] / 255.0
    np.testing.assert_allclose(images.numpy(), expected, rtol=0, atol=1e-7)
    assert np.array_equal(labels.numpy(), mnist.arrays.test_labels)


def test_generated_mnist_files_fail_the_official_checksums(mnist: GeneratedMnist) -> None:
    settings = DataSettings(dataset="mnist", data_dir=mnist.data_dir, download=False)
    with pytest.raises(DatasetError, match="official"):
        load_split(settings, "test")
    images, _ = load_split(
        DataSettings(dataset="mnist", data_dir=mnist.data_dir, download=False, verify=False),
        "test",
    )
    assert np.array_equal(images[:, 0], mnist.arrays.test_images)


def test_fashion_mnist_reads_the_same_format(tmp_path: Path, mnist: GeneratedMnist) -> None:
    data_dir = tmp_path / "fashion"
    shutil.copytree(mnist.data_dir / "mnist", data_dir)
    settings = DataSettings(
        dataset="fashion-mnist", data_dir=data_dir, download=False, verify=False
    )
    images, labels = load_split(settings, "train")
    assert images.shape == (200, 1, 28, 28)
    assert np.array_equal(labels, mnist.arrays.train_labels)


# --- partitions and the train/validation split --------------------------------------


def test_a_partition_is_split_90_10_and_partitions_are_disjoint(mnist: GeneratedMnist) -> None:
    spec = PartitionSpec(scheme="iid", num_partitions=4, seed=5)
    seen: list[np.ndarray] = []
    for pid in range(4):
        bundle = DataBundle(mnist.settings(), partition=spec, partition_id=pid, seed=9)
        assert len(bundle.train) == 45
        assert len(bundle.val) == 5
        both = torch.cat([bundle.train.images, bundle.val.images]).numpy()
        # Recover the original indices of the partition's images (all images differ).
        flat = mnist.arrays.train_images.reshape(200, -1)
        index = {row.tobytes(): i for i, row in enumerate(flat)}
        positions = np.array(sorted(index[img.tobytes()] for img in both.reshape(50, -1)))
        assert np.array_equal(positions, spec.select(mnist.arrays.train_labels, pid))
        seen.append(positions)
    everything = np.concatenate(seen)
    assert np.array_equal(np.sort(everything), np.arange(200))


def test_the_train_val_split_is_seeded(mnist: GeneratedMnist) -> None:
    spec = PartitionSpec(scheme="iid", num_partitions=2, seed=0)

    def val_images(seed: int) -> torch.Tensor:
        bundle = DataBundle(mnist.settings(), partition=spec, partition_id=1, seed=seed)
        return bundle.val.images

    assert torch.equal(val_images(3), val_images(3))
    assert not torch.equal(val_images(3), val_images(4))


def test_no_partition_means_the_whole_training_set(mnist: GeneratedMnist) -> None:
    bundle = DataBundle(mnist.settings(val_fraction=0.0))
    assert len(bundle.train) == 200
    assert len(bundle.val) == 0
    assert torch.equal(bundle.train.images[:, 0], torch.from_numpy(mnist.arrays.train_images))


def test_the_test_split_is_not_partitioned(mnist: GeneratedMnist) -> None:
    spec = PartitionSpec(scheme="iid", num_partitions=4, seed=0)
    bundle = DataBundle(mnist.settings(), partition=spec, partition_id=2)
    assert len(bundle.test) == 50


def test_unknown_split_is_an_error(mnist: GeneratedMnist) -> None:
    with pytest.raises(DataError, match="unknown split 'holdout'"):
        DataBundle(mnist.settings()).split("holdout")


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


# --- models and datasets -----------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "dataset"),
    [("cifar10-cnn", "cifar10"), ("mnist-cnn", "mnist"), ("mnist-mlp", "mnist")],
)
def test_default_datasets(model_id: str, dataset: str) -> None:
    assert default_dataset(model_id) == dataset
    check_compatible(model_id, dataset)


def test_fashion_mnist_fits_the_mnist_models() -> None:
    check_compatible("mnist-mlp", "fashion-mnist")
    check_compatible("mnist-cnn", "fashion-mnist")


def test_incompatible_model_and_dataset_are_named() -> None:
    with pytest.raises(DataError, match=r"'cifar10-cnn' takes 3x32x32 .* 'mnist' has 1x28x28"):
        check_compatible("cifar10-cnn", "mnist")


def test_unknown_dataset_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'svhn' \(known: cifar10, "):
        DataSettings(dataset="svhn", data_dir=tmp_path)


def test_preloaded_splits_are_used_instead_of_the_files(tmp_path: Path) -> None:
    images = np.arange(20 * 784, dtype=np.int64).reshape(20, 1, 28, 28).astype(np.uint8)
    labels = np.arange(20, dtype=np.int64) % 10
    # Nothing on disk and no download: only the preloaded arrays can serve.
    settings = DataSettings(dataset="mnist", data_dir=tmp_path, download=False)
    bundle = DataBundle(settings, preloaded={"train": (images, labels)}, seed=0)
    assert len(bundle.train) + len(bundle.val) == 20
    assert len(bundle.val) == 2
    with pytest.raises(DatasetError):
        bundle.split("test")  # not preloaded: read from (empty) disk
