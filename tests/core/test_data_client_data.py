"""One client's data as arrays: dataset settings, official splits, partitions, 90/10 split.

Runs on NumPy 1.23 and 2.x (both environments run tests/core), with generated
files in the official formats (the ``cifar``, ``cifar_data_dir`` and ``mnist``
fixtures of :mod:`tests.helpers.client_data`).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from orchard.data.client_data import (
    DATASETS,
    ClientDataset,
    DataError,
    DataSettings,
    check_compatible,
    default_dataset,
    load_split,
)
from orchard.data.download import DownloadError, Resource
from orchard.data.errors import DatasetError
from orchard.data.partition import PartitionSpec, train_val_split
from tests.helpers.client_data import (
    CIFAR_TARBALL,
    GeneratedCifar,
    GeneratedMnist,
    make_cifar,
    md5_of,
)
from tests.helpers.http import serve_directory

Arrays = tuple[np.ndarray, np.ndarray]


class ArrayDataset(ClientDataset[Arrays]):
    """The plainest adapter: a split is its (images, labels) arrays, unchanged."""

    def wrap(self, images: np.ndarray, labels: np.ndarray) -> Arrays:
        return images, labels


# --- official splits: CIFAR-10 ------------------------------------------------------------


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


def _assert_download_fails_naming(settings: DataSettings, *parts: str) -> None:
    """Reading the train split fails with a DownloadError whose message has every part."""
    with pytest.raises(DownloadError) as info:
        load_split(settings, "train")
    message = str(info.value)
    for part in parts:
        assert part in message, message


def test_cifar10_checksum_mismatch_names_url_cache_and_override(
    tmp_path: Path, cifar: GeneratedCifar
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(cifar.tarball, served / CIFAR_TARBALL)
    cache = tmp_path / "cache"
    with serve_directory(served) as url:
        wrong = Resource(CIFAR_TARBALL, f"{url}/{CIFAR_TARBALL}", "md5:" + "1" * 32)
        _assert_download_fails_naming(
            cifar.settings(cache, cifar10_resource=wrong),
            f"{url}/{CIFAR_TARBALL}",
            "checksum mismatch",
            str(cache / CIFAR_TARBALL),
            "ORCHARD_DATASET_MIRROR",
        )
    assert not (cache / CIFAR_TARBALL).exists()


def test_cifar10_failed_download_names_url_cache_and_override(
    tmp_path: Path, cifar: GeneratedCifar
) -> None:
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    cache = tmp_path / "cache"
    with serve_directory(empty) as url:
        _assert_download_fails_naming(
            cifar.settings(cache, mirror=url),
            f"{url}/{CIFAR_TARBALL}",
            "404",
            str(cache / CIFAR_TARBALL),
            "ORCHARD_DATASET_MIRROR",
        )


# --- official splits: MNIST format ---------------------------------------------------------


def test_mnist_images_get_a_channel_axis(mnist: GeneratedMnist) -> None:
    images, labels = load_split(mnist.settings(), "test")
    assert images.shape == (50, 1, 28, 28)
    assert images.dtype == np.uint8
    assert np.array_equal(images[:, 0], mnist.arrays.test_images)
    assert labels.dtype == np.int64
    assert np.array_equal(labels, mnist.arrays.test_labels)


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


# --- partitions and the train/validation split --------------------------------------------


def _original_positions(mnist: GeneratedMnist, images: np.ndarray) -> np.ndarray:
    """The indices in the training file of ``images`` (all generated images differ)."""
    flat = mnist.arrays.train_images.reshape(len(mnist.arrays.train_images), -1)
    index = {row.tobytes(): i for i, row in enumerate(flat)}
    return np.array(sorted(index[img.tobytes()] for img in images.reshape(len(images), -1)))


def test_a_partition_is_split_90_10_and_partitions_are_disjoint(mnist: GeneratedMnist) -> None:
    spec = PartitionSpec(scheme="iid", num_partitions=4, seed=5)
    seen: list[np.ndarray] = []
    for pid in range(4):
        data = ArrayDataset(mnist.settings(), partition=spec, partition_id=pid, seed=9)
        assert len(data.train[1]) == 45
        assert len(data.val[1]) == 5
        positions = _original_positions(mnist, np.concatenate([data.train[0], data.val[0]]))
        assert np.array_equal(positions, spec.select(mnist.arrays.train_labels, pid))
        seen.append(positions)
    everything = np.concatenate(seen)
    assert np.array_equal(np.sort(everything), np.arange(200))


def test_the_splits_follow_the_shared_partitioner_and_train_val_split(
    mnist: GeneratedMnist,
) -> None:
    """Computed independently from the two shared functions: any client, any framework."""
    spec = PartitionSpec(scheme="shards", num_partitions=5, seed=3)
    labels = mnist.arrays.train_labels.astype(np.int64)
    train_idx, val_idx = train_val_split(spec.select(labels, 4), val_fraction=0.1, seed=7)
    data = ArrayDataset(mnist.settings(), partition=spec, partition_id=4, seed=7)
    images, train_labels = data.train
    assert images.dtype == np.uint8
    assert train_labels.dtype == np.int64
    assert np.array_equal(images[:, 0], mnist.arrays.train_images[train_idx])
    assert np.array_equal(train_labels, labels[train_idx])
    assert np.array_equal(data.val[1], labels[val_idx])


def test_the_train_val_split_is_seeded(mnist: GeneratedMnist) -> None:
    spec = PartitionSpec(scheme="iid", num_partitions=2, seed=0)

    def val_images(seed: int) -> np.ndarray:
        return ArrayDataset(mnist.settings(), partition=spec, partition_id=1, seed=seed).val[0]

    assert np.array_equal(val_images(3), val_images(3))
    assert not np.array_equal(val_images(3), val_images(4))


def test_no_partition_means_the_whole_training_set(mnist: GeneratedMnist) -> None:
    data = ArrayDataset(mnist.settings(val_fraction=0.0))
    assert len(data.train[1]) == 200
    assert len(data.val[1]) == 0
    assert np.array_equal(data.train[0][:, 0], mnist.arrays.train_images)


def test_the_test_split_is_not_partitioned(mnist: GeneratedMnist) -> None:
    spec = PartitionSpec(scheme="iid", num_partitions=4, seed=0)
    data = ArrayDataset(mnist.settings(), partition=spec, partition_id=2)
    assert len(data.test[1]) == 50
    assert np.array_equal(data.test[0][:, 0], mnist.arrays.test_images)
    assert data.split("test") is data.test


def test_each_split_is_logged_once_with_its_size(
    mnist: GeneratedMnist, caplog: pytest.LogCaptureFixture
) -> None:
    spec = PartitionSpec(scheme="iid", num_partitions=4, seed=0)
    data = ArrayDataset(mnist.settings(), partition=spec, partition_id=1)
    with caplog.at_level(logging.INFO, logger="orchard.data.client_data"):
        _ = (data.train, data.val, data.split("val"), data.test, data.test)
    assert [r.getMessage() for r in caplog.records] == [
        "mnist: partition 1 of 4, 45 training and 5 validation examples",
        "mnist: 50 test examples",
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="orchard.data.client_data"):
        _ = ArrayDataset(mnist.settings()).train
    assert [r.getMessage() for r in caplog.records] == [
        "mnist: the whole training set, 180 training and 20 validation examples"
    ]


def test_unknown_split_is_an_error(mnist: GeneratedMnist) -> None:
    with pytest.raises(DataError, match=r"unknown split 'holdout' \(expected train, val or test\)"):
        ArrayDataset(mnist.settings()).split("holdout")


def test_preloaded_splits_are_used_instead_of_the_files(tmp_path: Path) -> None:
    images = np.arange(20 * 784, dtype=np.int64).reshape(20, 1, 28, 28).astype(np.uint8)
    labels = np.arange(20, dtype=np.int64) % 10
    # Nothing on disk and no download: only the preloaded arrays can serve.
    settings = DataSettings(dataset="mnist", data_dir=tmp_path, download=False)
    data = ArrayDataset(settings, preloaded={"train": (images, labels)}, seed=0)
    assert len(data.train[1]) + len(data.val[1]) == 20
    assert len(data.val[1]) == 2
    both = np.concatenate([data.train[1], data.val[1]])
    assert sorted(both.tolist()) == sorted(labels.tolist())
    with pytest.raises(DatasetError):
        data.split("test")  # not preloaded: read from (empty) disk


def test_a_split_never_asked_for_is_never_read(tmp_path: Path) -> None:
    """An evaluator holds only the test set: the training files need not exist."""
    images = np.zeros((3, 1, 28, 28), np.uint8)
    settings = DataSettings(dataset="mnist", data_dir=tmp_path, download=False)
    data = ArrayDataset(settings, preloaded={"test": (images, np.arange(3, dtype=np.int64))})
    assert len(data.test[1]) == 3
    assert "_train_val" not in vars(data)


# --- datasets, models and settings ------------------------------------------------------


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


def test_unknown_models_and_datasets_list_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'svhn' \(known: cifar10, "):
        DataSettings(dataset="svhn", data_dir=tmp_path)
    with pytest.raises(DataError, match=r"unknown model id 'resnet' \(known: cifar10-cnn, "):
        default_dataset("resnet")


def test_the_validation_fraction_must_leave_training_data(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"val_fraction must be in \[0, 1\), got 1.0"):
        DataSettings(dataset="mnist", data_dir=tmp_path, val_fraction=1.0)


def test_normalization_constants() -> None:
    """What every adapter applies: the tutorial's 0.5/0.5 for CIFAR-10, x/255 for MNIST."""
    assert DATASETS["cifar10"].image_shape == (3, 32, 32)
    assert (DATASETS["cifar10"].mean, DATASETS["cifar10"].std) == ((0.5,) * 3, (0.5,) * 3)
    for name in ("mnist", "fashion-mnist"):
        assert DATASETS[name].image_shape == (1, 28, 28)
        assert (DATASETS[name].mean, DATASETS[name].std) == ((0.0,), (1.0,))
