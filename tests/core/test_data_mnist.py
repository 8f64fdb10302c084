"""Tests of orchard.data.mnist on generated files in the official format, and on
Debian's real Fashion-MNIST files when they are installed."""

from __future__ import annotations

import gzip
import hashlib
import logging
import struct
from pathlib import Path

import numpy as np
import pytest

from orchard.data.download import MIRROR_ENV_VAR, DownloadError
from orchard.data.errors import DatasetError
from orchard.data.idx import IdxFormatError, write_idx
from orchard.data.mnist import FASHION_MNIST, MNIST, VARIANTS, load_mnist
from tests.helpers.datasets import (
    MNIST_FILENAMES,
    GeneratedDataset,
    generated_mnist_variant,
    write_mnist_files,
)
from tests.helpers.http import serve_directory

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _no_mirror_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MIRROR_ENV_VAR, raising=False)


@pytest.fixture
def generated(tmp_path: Path) -> tuple[Path, GeneratedDataset]:
    directory = tmp_path / "generated"
    return directory, write_mnist_files(directory, 120, 40, seed=0)


def _assert_split(
    result: tuple[np.ndarray, np.ndarray], images: np.ndarray, labels: np.ndarray
) -> None:
    got_images, got_labels = result
    assert got_images.dtype == np.uint8
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels.astype(np.int64))


def test_generated_files_have_the_official_names_and_headers(
    generated: tuple[Path, GeneratedDataset],
) -> None:
    directory, data = generated
    assert sorted(p.name for p in directory.iterdir()) == sorted(MNIST_FILENAMES.values())
    with gzip.open(directory / "train-images-idx3-ubyte.gz", "rb") as stream:
        assert struct.unpack(">IIII", stream.read(16)) == (0x803, 120, 28, 28)
        assert stream.read() == data.train_images.tobytes()
    with gzip.open(directory / "t10k-labels-idx1-ubyte.gz", "rb") as stream:
        assert struct.unpack(">II", stream.read(8)) == (0x801, 40)
        assert stream.read() == data.test_labels.tobytes()
    assert np.bincount(data.train_labels).tolist() == [12] * 10


def test_loads_generated_files_exactly(generated: tuple[Path, GeneratedDataset]) -> None:
    directory, data = generated
    train = load_mnist(directory, split="train", download=False, verify=False)
    _assert_split(train, data.train_images, data.train_labels)
    test = load_mnist(directory, split="test", download=False, verify=False)
    _assert_split(test, data.test_images, data.test_labels)


def test_learnable_images_depend_on_the_label(generated: tuple[Path, GeneratedDataset]) -> None:
    _, data = generated
    means = np.stack([data.train_images[data.train_labels == c].mean(axis=0) for c in range(10)])
    # A nearest-class-mean classifier separates the classes perfectly.
    distances = ((data.test_images[:, None].astype(float) - means[None]) ** 2).sum(axis=(2, 3))
    assert np.mean(distances.argmin(axis=1) == data.test_labels) == 1.0


def test_uncompressed_and_dotted_names_are_accepted(
    generated: tuple[Path, GeneratedDataset], tmp_path: Path
) -> None:
    source, data = generated
    directory = tmp_path / "plain"
    directory.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        dotted = name.replace("-idx", ".idx")
        (directory / dotted).write_bytes(gzip.decompress((source / f"{name}.gz").read_bytes()))
    result = load_mnist(directory, split="train", download=False, verify=False)
    _assert_split(result, data.train_images, data.train_labels)


def test_wrong_files_fail_verification_with_reasons(
    generated: tuple[Path, GeneratedDataset],
) -> None:
    directory, _ = generated
    with pytest.raises(DatasetError) as info:
        load_mnist(directory, variant="mnist", split="train", download=False)
    message = str(info.value)
    assert str(directory / "train-images-idx3-ubyte.gz") in message
    assert "not the official md5:f68b3c2dcbeaaa9fbdd348bbdeb94873" in message
    assert "ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz" in message


def test_missing_files_without_download_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_mnist(tmp_path, variant="fashion-mnist", split="test", download=False)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte" in message
    assert str(tmp_path / "fashion-mnist") in message


def test_verified_download_and_cache(
    generated: tuple[Path, GeneratedDataset], tmp_path: Path
) -> None:
    source, data = generated
    requests: list[str] = []
    cache_root = tmp_path / "cache"
    with serve_directory(source, request_log=requests) as url:
        variant = generated_mnist_variant(source, base_url=url)
        result = load_mnist(cache_root, variant=variant, split="train")
        _assert_split(result, data.train_images, data.train_labels)
        assert sorted(requests) == ["/train-images-idx3-ubyte.gz", "/train-labels-idx1-ubyte.gz"]
        assert (cache_root / variant.name / "train-images-idx3-ubyte.gz").is_file()

        again = load_mnist(cache_root, variant=variant, split="train")
        _assert_split(again, data.train_images, data.train_labels)
        assert len(requests) == 2  # verified cache hits, no new requests


def test_download_through_a_mirror(
    generated: tuple[Path, GeneratedDataset], tmp_path: Path
) -> None:
    source, data = generated
    variant = generated_mnist_variant(source, base_url="http://127.0.0.1:9/official")
    with serve_directory(source) as url:
        result = load_mnist(tmp_path / "cache", variant=variant, split="test", mirror=url)
    _assert_split(result, data.test_images, data.test_labels)


def test_failed_download_mentions_the_alternative_mirror(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with serve_directory(empty) as url, pytest.raises(DownloadError) as info:
        load_mnist(tmp_path / "cache", variant="mnist", split="test", mirror=url)
    message = str(info.value)
    assert f"{url}/t10k-images-idx3-ubyte.gz" in message
    assert "HTTP 404" in message
    assert "http://yann.lecun.com/exdb/mnist" in message
    assert MIRROR_ENV_VAR in message


def test_repacked_gzip_is_verified_by_content(
    generated: tuple[Path, GeneratedDataset],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, data = generated
    variant = generated_mnist_variant(source, base_url="http://127.0.0.1:9/unused")
    repacked = tmp_path / "repacked"
    repacked.mkdir()
    for name in MNIST_FILENAMES.values():
        content = gzip.decompress((source / name).read_bytes())
        (repacked / name).write_bytes(gzip.compress(content, mtime=12345))
    assert (repacked / MNIST_FILENAMES[("train", "images")]).read_bytes() != (
        source / MNIST_FILENAMES[("train", "images")]
    ).read_bytes()
    with caplog.at_level(logging.INFO, logger="orchard.data.mnist"):
        result = load_mnist(repacked, variant=variant, split="train", download=False)
    _assert_split(result, data.train_images, data.train_labels)
    assert "verified by its uncompressed content" in caplog.text


def test_corrupted_content_is_rejected(
    generated: tuple[Path, GeneratedDataset], tmp_path: Path
) -> None:
    source, _ = generated
    variant = generated_mnist_variant(source, base_url="http://127.0.0.1:9/unused")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in MNIST_FILENAMES.values():
        content = bytearray(gzip.decompress((source / name).read_bytes()))
        content[-1] ^= 0xFF
        (broken / name).write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(DatasetError, match="uncompressed content has sha256"):
        load_mnist(broken, variant=variant, split="train", download=False)


def test_mismatched_counts_are_rejected(tmp_path: Path) -> None:
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((12, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(10, dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"holds 10 labels but .* holds 12 images"):
        load_mnist(tmp_path, split="train", download=False, verify=False)


def test_wrong_image_shape_is_rejected(tmp_path: Path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((4, 32, 32), dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"t10k-images.*\(N, 28, 28\)"):
        load_mnist(tmp_path, split="test", download=False, verify=False)


def test_out_of_range_labels_are_rejected(tmp_path: Path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 10, 2], dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"label 10 is outside 0\.\.9"):
        load_mnist(tmp_path, split="test", download=False, verify=False)


def test_truncated_file_is_an_idx_error(tmp_path: Path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((4, 28, 28), dtype=np.uint8))
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IdxFormatError, match="t10k-images-idx3-ubyte: truncated"):
        load_mnist(tmp_path, split="test", download=False, verify=False)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [({"variant": "kmnist"}, "variant 'kmnist'"), ({"split": "val"}, "split 'val'")],
)
def test_bad_options_are_named(tmp_path: Path, kwargs: dict[str, str], problem: str) -> None:
    with pytest.raises(DatasetError, match=problem):
        load_mnist(tmp_path, download=False, **kwargs)  # type: ignore[arg-type]


# The official checksums, as listed in torchvision's MNIST and FashionMNIST classes.
TORCHVISION_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
OFFICIAL_BASE = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
}


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_official_resources(name: str) -> None:
    variant = VARIANTS[name]
    files = [variant.files(s) for s in ("train", "test")]
    resources = [f.resource for pair in files for f in pair]
    assert {r.filename: r.checksum for r in resources} == {
        k: f"md5:{v}" for k, v in TORCHVISION_MD5[name].items()
    }
    assert all(r.url == f"{OFFICIAL_BASE[name]}/{r.filename}" for r in resources)
    assert (MNIST if name == "mnist" else FASHION_MNIST) is variant


# --- Debian's real Fashion-MNIST ------------------------------------------------

# Zalando's published archives carry the original file name and these
# timestamps in their gzip headers; Debian's package keeps the deflate streams
# but normalises the header (no name, the packaging date).
OFFICIAL_GZIP_MTIME = {
    "train-images-idx3-ubyte.gz": 1504176606,
    "train-labels-idx1-ubyte.gz": 1504176606,
    "t10k-images-idx3-ubyte.gz": 1504176627,
    "t10k-labels-idx1-ubyte.gz": 1504176627,
}


def _official_archive_md5(path: Path) -> str:
    """MD5 of ``path`` with its gzip header rewritten as in the official archive."""
    data = path.read_bytes()
    assert data[:3] == b"\x1f\x8b\x08"
    flags = data[3]
    if flags == 0x08:  # already carries a file name: compare as is
        return hashlib.md5(data).hexdigest()
    assert flags == 0, f"{path}: unexpected gzip flags {flags:#x}"
    inner_name = path.name.removesuffix(".gz").encode() + b"\0"
    header = b"\x1f\x8b\x08\x08" + struct.pack("<I", OFFICIAL_GZIP_MTIME[path.name]) + data[8:10]
    return hashlib.md5(header + inner_name + data[10:]).hexdigest()


@pytest.fixture(scope="module")
def debian_fashion_mnist() -> Path:
    if not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip(
            f"{DEBIAN_FASHION_MNIST} is missing; install Debian's dataset-fashion-mnist "
            "package to run the real-data tests"
        )
    return DEBIAN_FASHION_MNIST


def test_debian_files_hold_the_official_data(debian_fashion_mnist: Path) -> None:
    for name, md5 in TORCHVISION_MD5["fashion-mnist"].items():
        assert _official_archive_md5(debian_fashion_mnist / name) == md5, name


@pytest.mark.parametrize(("split", "count"), [("train", 60000), ("test", 10000)])
def test_debian_directory_loads_and_verifies(
    debian_fashion_mnist: Path, split: str, count: int
) -> None:
    images, labels = load_mnist(
        debian_fashion_mnist,
        variant="fashion-mnist",
        split=split,  # type: ignore[arg-type]
        download=False,
    )
    assert images.shape == (count, 28, 28)
    assert images.dtype == np.uint8
    assert labels.shape == (count,)
    assert np.bincount(labels).tolist() == [count // 10] * 10
