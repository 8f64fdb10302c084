"""Tests of orchard.data.cifar10 on generated archives in the official binary format."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from orchard.data.cifar10 import (
    BATCHES_DIR,
    CIFAR10_BINARY,
    CLASSES,
    load_cifar10,
    read_batch,
)
from orchard.data.download import MIRROR_ENV_VAR, Resource
from orchard.data.errors import DatasetError
from tests.helpers.datasets import CIFAR10_MEMBERS, GeneratedDataset, write_cifar10_tarball
from tests.helpers.http import serve_directory

N_PER_BATCH = 20
TARBALL = "cifar-10-binary.tar.gz"


@pytest.fixture(autouse=True)
def _no_mirror_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MIRROR_ENV_VAR, raising=False)


@pytest.fixture
def generated(tmp_path: Path) -> tuple[Path, GeneratedDataset]:
    directory = tmp_path / "data"
    return directory, write_cifar10_tarball(directory / TARBALL, N_PER_BATCH, seed=0)


def _local_resource(tarball: Path, url: str) -> Resource:
    md5 = hashlib.md5(tarball.read_bytes()).hexdigest()
    return Resource(TARBALL, f"{url}/{TARBALL}", f"md5:{md5}")


def test_generated_tarball_has_the_official_members_and_record_layout(
    generated: tuple[Path, GeneratedDataset],
) -> None:
    directory, data = generated
    with tarfile.open(directory / TARBALL, "r:gz") as archive:
        names = [m.name + ("/" if m.isdir() else "") for m in archive.getmembers()]
        assert names == list(CIFAR10_MEMBERS)
        member = archive.extractfile(f"{BATCHES_DIR}/data_batch_2.bin")
        assert member is not None
        raw = member.read()
        meta = archive.extractfile(f"{BATCHES_DIR}/batches.meta.txt")
        assert meta is not None
        assert meta.read().decode().split() == list(CLASSES)
    assert len(raw) == N_PER_BATCH * 3073
    # Record 0 of batch 2: label byte, then the R, G and B planes, each row-major.
    first = N_PER_BATCH  # batch 2 starts after batch 1's records
    assert raw[0] == data.train_labels[first]
    image = data.train_images[first]
    assert raw[1:1025] == image[0].tobytes()
    assert raw[1025:2049] == image[1].tobytes()
    assert raw[2049:3073] == image[2].tobytes()
    assert raw[3073] == data.train_labels[first + 1]


def test_loads_generated_archive_exactly(generated: tuple[Path, GeneratedDataset]) -> None:
    directory, data = generated
    images, labels = load_cifar10(directory, split="train", download=False, verify=False)
    assert images.dtype == np.uint8
    assert images.shape == (5 * N_PER_BATCH, 3, 32, 32)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(images, data.train_images)
    np.testing.assert_array_equal(labels, data.train_labels)

    test_images, test_labels = load_cifar10(directory, split="test", download=False, verify=False)
    np.testing.assert_array_equal(test_images, data.test_images)
    np.testing.assert_array_equal(test_labels, data.test_labels)


def test_extracts_once_then_reads_the_extracted_batches(
    generated: tuple[Path, GeneratedDataset],
) -> None:
    directory, data = generated
    load_cifar10(directory, split="test", download=False, verify=False)
    assert sorted(p.name for p in (directory / BATCHES_DIR).iterdir()) == sorted(
        m.split("/")[1] for m in CIFAR10_MEMBERS[1:]
    )
    assert sorted(p.name for p in directory.iterdir()) == sorted([TARBALL, BATCHES_DIR])
    (directory / TARBALL).unlink()
    images, _ = load_cifar10(directory, split="train", download=False)
    np.testing.assert_array_equal(images, data.train_images)


def test_a_directory_of_batch_files_is_accepted(
    generated: tuple[Path, GeneratedDataset], tmp_path: Path
) -> None:
    directory, data = generated
    load_cifar10(directory, split="test", download=False, verify=False)
    _, labels = load_cifar10(directory / BATCHES_DIR, split="test", download=False)
    np.testing.assert_array_equal(labels, data.test_labels)


def test_unverified_tarball_is_refused_by_default(
    generated: tuple[Path, GeneratedDataset],
) -> None:
    directory, _ = generated
    with pytest.raises(DatasetError, match=r"does not match the official checksum md5:c32a1d4a"):
        load_cifar10(directory, split="train", download=False)
    assert not (directory / BATCHES_DIR).exists()


def test_missing_everything_says_where_to_put_the_tarball(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_cifar10(tmp_path, split="test", download=False)
    message = str(info.value)
    assert str(tmp_path / TARBALL) in message
    assert CIFAR10_BINARY.url in message


def test_verified_download_extract_and_cache(
    generated: tuple[Path, GeneratedDataset], tmp_path: Path
) -> None:
    source, data = generated
    cache = tmp_path / "cache"
    requests: list[str] = []
    with serve_directory(source, request_log=requests) as url:
        resource = _local_resource(source / TARBALL, url)
        _, labels = load_cifar10(cache, split="test", resource=resource)
        np.testing.assert_array_equal(labels, data.test_labels)
        images, _ = load_cifar10(cache, split="train", resource=resource)
        np.testing.assert_array_equal(images, data.train_images)
    assert requests == [f"/{TARBALL}"]


def test_download_through_a_mirror(
    generated: tuple[Path, GeneratedDataset], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, data = generated
    resource = _local_resource(source / TARBALL, "http://127.0.0.1:9/official")
    with serve_directory(source) as url:
        monkeypatch.setenv(MIRROR_ENV_VAR, url)
        _, labels = load_cifar10(tmp_path / "cache", split="test", resource=resource)
    np.testing.assert_array_equal(labels, data.test_labels)


def test_truncated_batch_is_reported(generated: tuple[Path, GeneratedDataset]) -> None:
    directory, _ = generated
    load_cifar10(directory, split="test", download=False, verify=False)
    batch = directory / BATCHES_DIR / "data_batch_3.bin"
    batch.write_bytes(batch.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=r"data_batch_3\.bin: size \d+ bytes .* 3073-byte"):
        load_cifar10(directory, split="train", download=False)


@pytest.mark.parametrize(
    ("split", "name"), [("test", "test_batch.bin"), ("train", "data_batch_3.bin")]
)
def test_a_batch_cut_at_a_record_boundary_is_reported(
    generated: tuple[Path, GeneratedDataset], split: str, name: str
) -> None:
    directory, _ = generated
    load_cifar10(directory, split="test", download=False, verify=False)  # extracts all batches
    batch = directory / BATCHES_DIR / name
    batch.write_bytes(batch.read_bytes()[: -2 * 3073])  # two whole records fewer
    with pytest.raises(DatasetError) as caught:
        load_cifar10(directory, split=split, download=False)  # type: ignore[arg-type]
    message = str(caught.value)
    assert f"{name}: {N_PER_BATCH - 2} records" in message
    assert f"({N_PER_BATCH} in its sibling files; 10000 in the official ones)" in message
    assert "truncated" in message


def test_a_flipped_byte_in_the_archive_is_caught_without_checksums(tmp_path: Path) -> None:
    # Stored (level 0) gzip blocks: the flipped byte changes a pixel and no
    # deflate error can reveal it; only gzip's CRC-32 at the stream's end does.
    source = tmp_path / "source"
    write_cifar10_tarball(source / TARBALL, N_PER_BATCH, seed=0)
    raw = gzip.decompress((source / TARBALL).read_bytes())
    damaged = bytearray(gzip.compress(raw, compresslevel=0, mtime=0))
    damaged[len(damaged) // 2] ^= 0x01
    directory = tmp_path / "data"
    directory.mkdir()
    (directory / TARBALL).write_bytes(bytes(damaged))
    # Reading the members alone (what extraction used to do) notices nothing.
    with tarfile.open(directory / TARBALL, "r:*") as archive:
        for member in archive:
            if member.isfile():
                extracted = archive.extractfile(member)
                assert extracted is not None
                extracted.read()
    with pytest.raises(DatasetError, match=r"cannot extract the archive \(CRC check failed"):
        load_cifar10(directory, split="test", download=False, verify=False)
    assert sorted(p.name for p in directory.iterdir()) == [TARBALL]


def test_bad_label_byte_is_reported(tmp_path: Path) -> None:
    records = np.zeros((3, 3073), dtype=np.uint8)
    records[2, 0] = 17
    path = tmp_path / "test_batch.bin"
    path.write_bytes(records.tobytes())
    with pytest.raises(DatasetError, match=r"test_batch\.bin: record 2 has label byte 17"):
        read_batch(path)


def test_read_batch_maps_planes_to_channels(tmp_path: Path) -> None:
    record = np.zeros(3073, dtype=np.uint8)
    record[0] = 7
    record[1 + 5] = 11  # red, row 0, column 5
    record[1 + 1024 + 32 * 2 + 3] = 22  # green, row 2, column 3
    record[1 + 2048 + 32 * 31 + 31] = 33  # blue, row 31, column 31
    path = tmp_path / "one.bin"
    path.write_bytes(record.tobytes())
    images, labels = read_batch(path)
    assert labels.tolist() == [7]
    assert images.shape == (1, 3, 32, 32)
    assert (images[0, 0, 0, 5], images[0, 1, 2, 3], images[0, 2, 31, 31]) == (11, 22, 33)
    assert int(images.sum()) == 66


def _tarball_with(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for info, data in members:
            if info.isfile():
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                archive.addfile(info)


def _file(name: str, data: bytes = b"\0" * 3073) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, b""


@pytest.mark.parametrize(
    "evil",
    [
        _file("../evil.bin"),
        _file("/tmp/evil.bin"),
        _file(f"{BATCHES_DIR}/../../evil.bin"),
        _file(f"{BATCHES_DIR}/sub/evil.bin"),
        _file("elsewhere/evil.bin"),
        _link(f"{BATCHES_DIR}/data_batch_1.bin", "/etc/passwd"),
    ],
    ids=["parent", "absolute", "nested-parent", "subdirectory", "other-directory", "symlink"],
)
def test_unsafe_archives_are_refused_without_writing(
    tmp_path: Path, evil: tuple[tarfile.TarInfo, bytes]
) -> None:
    directory = tmp_path / "data" / "inner"
    directory.mkdir(parents=True)
    members = [_file(f"{BATCHES_DIR}/{m.split('/')[1]}") for m in CIFAR10_MEMBERS[1:7]]
    _tarball_with(directory / TARBALL, [evil, *members])
    with pytest.raises(DatasetError, match="refusing archive member"):
        load_cifar10(directory, split="test", download=False, verify=False)
    assert sorted(p.name for p in directory.iterdir()) == [TARBALL]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["inner"]


def test_archive_missing_batches_leaves_no_directory(tmp_path: Path) -> None:
    _tarball_with(tmp_path / TARBALL, [_file(f"{BATCHES_DIR}/test_batch.bin")])
    with pytest.raises(DatasetError, match=r"lacks cifar-10-batches-bin/data_batch_1\.bin"):
        load_cifar10(tmp_path, split="test", download=False, verify=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [TARBALL]


def test_damaged_archive_is_reported(generated: tuple[Path, GeneratedDataset]) -> None:
    directory, _ = generated
    tarball = directory / TARBALL
    tarball.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])
    with pytest.raises(DatasetError, match="cannot extract the archive"):
        load_cifar10(directory, split="test", download=False, verify=False)
    assert sorted(p.name for p in directory.iterdir()) == [TARBALL]


def test_incomplete_extracted_directory_is_reported(
    generated: tuple[Path, GeneratedDataset],
) -> None:
    directory, _ = generated
    load_cifar10(directory, split="test", download=False, verify=False)
    (directory / BATCHES_DIR / "data_batch_4.bin").unlink()
    with pytest.raises(DatasetError, match=r"lacks data_batch_4\.bin; delete the directory"):
        load_cifar10(directory, split="train", download=False, verify=False)
    shutil.rmtree(directory / BATCHES_DIR)
    images, _ = load_cifar10(directory, split="train", download=False, verify=False)
    assert images.shape[0] == 5 * N_PER_BATCH


def test_bad_split_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="split 'validation'"):
        load_cifar10(tmp_path, split="validation", download=False)  # type: ignore[arg-type]
