"""MNIST-format data for the MXNet client: preprocessing, download path, partitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mxnet")

from orchard.data.download import DownloadError
from orchard.data.partition import PartitionSpec
from orchard_mxnet.data import ClientData, DataError, DataSettings, ImageSet, preprocess
from tests.client_mxnet.conftest import GeneratedMnist, install_generated_mnist
from tests.helpers.http import serve_directory

pytestmark = pytest.mark.mxnet


def test_preprocessing_is_plain_division_by_255_in_each_models_shape() -> None:
    images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28).astype(np.uint8)
    flat = preprocess(images, "mnist-mlp")
    assert flat.dtype == np.float32
    assert flat.shape == (2, 784)
    # Row-major: pixel (r, c) of image i is feature 28 * r + c.
    assert flat[1, 28 * 5 + 7] == np.float32(images[1, 5, 7]) / np.float32(255.0)
    np.testing.assert_array_equal(flat, images.reshape(2, 784).astype(np.float32) / 255.0)
    assert flat.min() == 0.0
    assert flat.max() == 1.0
    grid = preprocess(images, "mnist-cnn")
    assert grid.shape == (2, 1, 28, 28)
    np.testing.assert_array_equal(grid[:, 0], images.astype(np.float32) / 255.0)


def test_preprocessing_refuses_other_images() -> None:
    with pytest.raises(DataError, match=r"uint8 images of shape \(N, 28, 28\).*float32"):
        preprocess(np.zeros((1, 28, 28), np.float32), "mnist-mlp")
    with pytest.raises(DataError, match=r"\[1, 32, 32\]"):
        preprocess(np.zeros((1, 32, 32), np.uint8), "mnist-mlp")


def test_image_sets_batch_in_the_given_order() -> None:
    images = np.zeros((5, 28, 28), np.uint8)
    images[:, 0, 0] = [10, 20, 30, 40, 50]
    data = ImageSet(images, np.arange(5, dtype=np.int64), "mnist-mlp")
    batches = list(data.batches(2, order=np.array([4, 3, 2, 1, 0])))
    assert [b[1].tolist() for b in batches] == [[4, 3], [2, 1], [0]]
    assert batches[0][0][:, 0].tolist() == pytest.approx([50 / 255, 40 / 255])
    assert data.num_batches(2) == 3
    with pytest.raises(DataError, match="3 images but 2 labels"):
        ImageSet(images[:3], np.arange(2), "mnist-mlp")


def test_unknown_datasets_and_fractions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"'cifar10' for the MXNet client.*mnist, fashion-mnist"):
        ClientData(DataSettings(dataset="cifar10", data_dir=tmp_path), model_id="mnist-mlp")
    with pytest.raises(DataError, match=r"val_fraction must be in \[0, 1\)"):
        DataSettings(dataset="mnist", data_dir=tmp_path, val_fraction=1.0)


def test_the_whole_training_set_is_read_exactly(generated_mnist: GeneratedMnist) -> None:
    settings = DataSettings(dataset="mnist", data_dir=generated_mnist.data_dir, val_fraction=0.0)
    data = ClientData(settings, model_id="mnist-cnn")
    arrays = generated_mnist.arrays
    np.testing.assert_array_equal(data.train.images, arrays.train_images)
    np.testing.assert_array_equal(data.train.labels, arrays.train_labels)
    assert data.train.labels.dtype == np.int64
    assert len(data.val) == 0
    np.testing.assert_array_equal(data.test.images, arrays.test_images)
    np.testing.assert_array_equal(data.test.labels, arrays.test_labels)


def test_files_are_downloaded_verified_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests: list[str] = []
    mirror = tmp_path / "source"
    with serve_directory(mirror, request_log=requests) as url:
        generated = install_generated_mnist(tmp_path, monkeypatch, base_url=url, cached=False)
        settings = DataSettings(dataset="mnist", data_dir=generated.data_dir)
        data = ClientData(settings, model_id="mnist-mlp")
        assert len(data.train) + len(data.val) == 300
        assert sorted(requests) == ["/train-images-idx3-ubyte.gz", "/train-labels-idx1-ubyte.gz"]
        assert (generated.data_dir / "mnist" / "train-images-idx3-ubyte.gz").is_file()
        # The test split is read only when asked for.
        np.testing.assert_array_equal(data.test.images, generated.arrays.test_images)
        assert len(requests) == 4
        # A second client reads the verified cache and downloads nothing.
        again = ClientData(settings, model_id="mnist-mlp")
        assert len(again.train) == len(data.train)
        assert len(requests) == 4


def test_the_mirror_setting_replaces_the_official_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = install_generated_mnist(tmp_path, monkeypatch, cached=False)  # official: dead
    requests: list[str] = []
    with serve_directory(generated.source_dir, request_log=requests) as url:
        settings = DataSettings(dataset="mnist", data_dir=generated.data_dir, mirror=url)
        data = ClientData(settings, model_id="mnist-mlp")
        assert len(data.train) == 270
    assert "/train-images-idx3-ubyte.gz" in requests


def test_fashion_mnist_is_read_from_its_own_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = install_generated_mnist(tmp_path, monkeypatch, variant="fashion-mnist", seed=5)
    settings = DataSettings(dataset="fashion-mnist", data_dir=generated.data_dir, val_fraction=0)
    data = ClientData(settings, model_id="mnist-mlp")
    np.testing.assert_array_equal(data.train.images, generated.arrays.train_images)
    assert (generated.data_dir / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file()


def test_a_failed_download_names_the_url_the_cache_path_and_the_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    with serve_directory(empty) as url:
        generated = install_generated_mnist(tmp_path, monkeypatch, base_url=url, cached=False)
        data = ClientData(
            DataSettings(dataset="mnist", data_dir=generated.data_dir), model_id="mnist-mlp"
        )
        with pytest.raises(DownloadError) as caught:
            _ = data.train
    message = str(caught.value)
    assert f"{url}/train-images-idx3-ubyte.gz" in message
    assert "404" in message
    assert str(generated.data_dir / "mnist" / "train-images-idx3-ubyte.gz") in message
    assert "ORCHARD_DATASET_MIRROR" in message


def test_partitions_are_disjoint_cover_the_data_and_hold_out_ten_percent(
    generated_mnist: GeneratedMnist,
) -> None:
    settings = DataSettings(dataset="mnist", data_dir=generated_mnist.data_dir)
    spec = PartitionSpec(scheme="iid", num_partitions=3, seed=1)
    train_images = generated_mnist.arrays.train_images
    seen: list[int] = []
    for pid in range(3):
        data = ClientData(settings, model_id="mnist-mlp", partition=spec, partition_id=pid, seed=2)
        assert len(data.train) == 90
        assert len(data.val) == 10
        for part in (data.train, data.val):
            # Recover each example's index in the file from its (unique) pixels.
            for image in part.images:
                matches = np.flatnonzero((train_images == image).all(axis=(1, 2)))
                assert matches.size == 1
                seen.append(int(matches[0]))
    assert sorted(seen) == list(range(300))


def test_partitions_follow_the_shared_partitioner(generated_mnist: GeneratedMnist) -> None:
    """The same settings give the same examples in every client (any framework)."""
    settings = DataSettings(dataset="mnist", data_dir=generated_mnist.data_dir, val_fraction=0)
    spec = PartitionSpec(scheme="shards", num_partitions=5, seed=3, shards_per_client=2)
    labels = generated_mnist.arrays.train_labels.astype(np.int64)
    expected = spec.select(labels, 4)
    data = ClientData(settings, model_id="mnist-mlp", partition=spec, partition_id=4)
    np.testing.assert_array_equal(data.train.labels, labels[expected])
    # Two shards per client: a label-skewed partition with few classes.
    assert len(np.unique(data.train.labels)) <= 4


def test_unknown_split_names_are_refused(generated_mnist: GeneratedMnist) -> None:
    data = ClientData(
        DataSettings(dataset="mnist", data_dir=generated_mnist.data_dir), model_id="mnist-mlp"
    )
    with pytest.raises(DataError, match=r"'validation'.*train, val or test"):
        data.split("validation")
