"""Small generated datasets in the exact official file formats.

No dataset can be downloaded where the tests run, so tests write their own
MNIST-style IDX files and CIFAR-10 binary tarballs. The writers build the
bytes themselves (``struct``, ``gzip``, ``tarfile``) instead of calling
Orchard's own writers, so a reader test compares Orchard against an
independent rendering of the format.

With ``learnable=True`` each image carries a class-dependent pattern (a bright
block whose position depends on the label, plus a class tint for CIFAR-10)
over random noise, so a model trained for a few steps on these files beats
chance by a wide margin; with ``learnable=False`` pixels are pure noise.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchard.data.download import Resource
from orchard.data.mnist import IdxFile, MnistVariant

__all__ = [
    "CIFAR10_MEMBERS",
    "MNIST_FILENAMES",
    "UNREACHABLE",
    "GeneratedDataset",
    "generated_mnist_variant",
    "write_cifar10_tarball",
    "write_mnist_files",
]

NUM_CLASSES = 10

#: A base URL nobody answers: generated files must come from a cache or a mirror,
#: so a download attempt fails loudly.
UNREACHABLE = "http://127.0.0.1:9/unreachable"

#: The official MNIST/Fashion-MNIST file names, by (split, kind).
MNIST_FILENAMES: dict[tuple[str, str], str] = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}

#: The members of the official cifar-10-binary.tar.gz, in archive order.
CIFAR10_MEMBERS: tuple[str, ...] = (
    "cifar-10-batches-bin/",
    "cifar-10-batches-bin/data_batch_1.bin",
    "cifar-10-batches-bin/data_batch_2.bin",
    "cifar-10-batches-bin/data_batch_3.bin",
    "cifar-10-batches-bin/data_batch_4.bin",
    "cifar-10-batches-bin/data_batch_5.bin",
    "cifar-10-batches-bin/test_batch.bin",
    "cifar-10-batches-bin/batches.meta.txt",
    "cifar-10-batches-bin/readme.html",
)

_CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@dataclass(frozen=True, slots=True)
class GeneratedDataset:
    """The arrays written to disk, for comparing what a reader returns."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def _balanced_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Labels with every class equally often (up to one), in random order."""
    return rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.uint8)


def _block_position(label: int, size: int, block: int) -> tuple[int, int]:
    """Top-left corner of a class's block on a 3 x 4 grid that fits in ``size``."""
    row, col = divmod(label, 4)
    step_r = (size - block) // 2
    step_c = (size - block) // 3
    return row * step_r, col * step_c


def _images(
    rng: np.random.Generator,
    labels: np.ndarray,
    shape: tuple[int, ...],
    learnable: bool,
) -> np.ndarray:
    """uint8 images of ``shape`` (per example); channel-first if 3-D."""
    n = labels.size
    if not learnable:
        return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    size = shape[-1]
    block = size // 4
    pixels = rng.integers(0, 64, size=(n, *shape)).astype(np.int64)
    for i, label in enumerate(labels.tolist()):
        top, left = _block_position(label, size, block)
        pixels[i, ..., top : top + block, left : left + block] += 160
        if len(shape) == 3:
            pixels[i, label % shape[0]] += 24 * (1 + label // shape[0])
    clipped: np.ndarray = np.clip(pixels, 0, 255).astype(np.uint8)
    return clipped


def _idx_bytes(array: np.ndarray) -> bytes:
    """An IDX rendering of a uint8 array: magic 0x00 0x00 0x08 ndim, big-endian dims, data."""
    assert array.dtype == np.uint8
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes(order="C")


def _write_gzip(path: Path, payload: bytes) -> None:
    """gzip like the official files: the inner file name in the header (mtime 0 here)."""
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename=path.name[: -len(".gz")], mode="wb", fileobj=raw, mtime=0) as gz,
    ):
        gz.write(payload)


def write_mnist_files(
    directory: Path | str,
    n_train: int,
    n_test: int,
    *,
    seed: int,
    learnable: bool = True,
) -> GeneratedDataset:
    """Write the four MNIST files (gzip IDX, official names) into ``directory``.

    Images are ``uint8 (N, 28, 28)``, labels ``uint8 (N,)`` with balanced
    classes; the returned arrays are exactly what was written.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = _balanced_labels(rng, n)
        images = _images(rng, labels, (28, 28), learnable)
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels
        _write_gzip(directory / MNIST_FILENAMES[(split, "images")], _idx_bytes(images))
        _write_gzip(directory / MNIST_FILENAMES[(split, "labels")], _idx_bytes(labels))
    return GeneratedDataset(**arrays)


def generated_mnist_variant(
    directory: Path | str, *, base_url: str, name: str = "generated-mnist"
) -> MnistVariant:
    """An ``MnistVariant`` whose checksums are those of the files in ``directory``.

    Lets tests run ``load_mnist``'s verified download path against generated
    files served from ``base_url``.
    """
    directory = Path(directory)

    def idx_file(split: str, kind: str) -> IdxFile:
        filename = MNIST_FILENAMES[(split, kind)]
        path = directory / filename
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        content = gzip.decompress(path.read_bytes())
        return IdxFile(
            Resource(filename, f"{base_url}/{filename}", f"md5:{md5}"),
            hashlib.sha256(content).hexdigest(),
        )

    return MnistVariant(
        name=name,
        train_images=idx_file("train", "images"),
        train_labels=idx_file("train", "labels"),
        test_images=idx_file("test", "images"),
        test_labels=idx_file("test", "labels"),
    )


def _add_member(archive: tarfile.TarFile, name: str, data: bytes | None) -> None:
    info = tarfile.TarInfo(name.rstrip("/"))
    info.mtime = 0
    info.uname = info.gname = "root"
    if data is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        archive.addfile(info)
    else:
        info.size = len(data)
        info.mode = 0o644
        archive.addfile(info, io.BytesIO(data))


def write_cifar10_tarball(
    path: Path | str,
    n_per_batch: int,
    *,
    seed: int,
    learnable: bool = True,
) -> GeneratedDataset:
    """Write a ``cifar-10-binary.tar.gz`` with the official member names and record layout.

    Each of the five training batches and the test batch holds
    ``n_per_batch`` records of 1 label byte + 3072 pixel bytes (R, G, B
    planes, row-major). Returned images are ``uint8 (N, 3, 32, 32)``, labels
    ``uint8 (N,)``; the training arrays are the five batches in order.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(6):
        labels = _balanced_labels(rng, n_per_batch)
        batches.append((_images(rng, labels, (3, 32, 32), learnable), labels))

    def records(images: np.ndarray, labels: np.ndarray) -> bytes:
        rows = np.concatenate([labels[:, None], images.reshape(labels.size, 3072)], axis=1)
        return np.ascontiguousarray(rows, dtype=np.uint8).tobytes()

    contents: dict[str, bytes | None] = {CIFAR10_MEMBERS[0]: None}
    for member, (images, labels) in zip(CIFAR10_MEMBERS[1:7], batches, strict=True):
        contents[member] = records(images, labels)
    contents[CIFAR10_MEMBERS[7]] = ("\n".join(_CIFAR10_CLASSES) + "\n\n").encode()
    contents[CIFAR10_MEMBERS[8]] = (
        b"<meta HTTP-EQUIV='REFRESH' content='0; url=http://www.cs.toronto.edu/~kriz/cifar.html'>\n"
    )
    with (
        gzip.GzipFile(path, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as archive,
    ):
        for member in CIFAR10_MEMBERS:
            _add_member(archive, member, contents[member])

    train = batches[:5]
    return GeneratedDataset(
        train_images=np.concatenate([b[0] for b in train]),
        train_labels=np.concatenate([b[1] for b in train]),
        test_images=batches[5][0],
        test_labels=batches[5][1],
    )
