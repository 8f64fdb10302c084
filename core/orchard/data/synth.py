"""Synthetic datasets in the exact official file formats, for smoke tests.

Sites without internet access (and test suites) still need files that the
real readers accept: this module writes MNIST-style gzip IDX files (also the
Fashion-MNIST layout) and a CIFAR-10 binary tarball with the official member
names and record layout. The bytes are built here with ``struct``, ``gzip``
and ``tarfile``, not with Orchard's own IDX writer, so reader tests compare
Orchard against an independent rendering of each format.

Synthetic data must never pass for the real thing: :func:`write_synthetic`
leaves a ``SYNTHETIC-<dataset>.txt`` marker beside the files, and
:func:`is_synthetic` lets the loaders (:func:`orchard.data.client_data.load_split`)
say so in every client's log. Synthetic files cannot match the official
checksums, so a marked dataset is read without checksum verification.

With ``learnable=True`` each image carries a class-dependent pattern (a bright
block whose position depends on the label, plus a class tint for CIFAR-10)
over random noise, so a model trained for a few steps on these files beats
chance by a wide margin; with ``learnable=False`` pixels are pure noise.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np

from orchard.files import atomic_write

__all__ = [
    "CIFAR10_MEMBERS",
    "MNIST_FILENAMES",
    "SYNTHETIC_DATASETS",
    "GeneratedDataset",
    "is_synthetic",
    "synthetic_marker",
    "write_cifar10_tarball",
    "write_mnist_files",
    "write_synthetic",
]

NUM_CLASSES = 10

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
    if array.dtype != np.uint8:
        raise ValueError(f"IDX arrays here are uint8, got {array.dtype}")
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes(order="C")


def _write_gzip(path: Path, payload: bytes) -> None:
    """gzip like the official files (the inner file name in the header, mtime 0), atomically."""

    def write(raw: BinaryIO) -> None:
        with gzip.GzipFile(
            filename=path.name[: -len(".gz")], mode="wb", fileobj=raw, mtime=0
        ) as gz:
            gz.write(payload)

    atomic_write(path, write, mode=0o644)


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

    def write(raw: BinaryIO) -> None:
        with (
            gzip.GzipFile(filename=path.name, mode="wb", fileobj=raw, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as archive,
        ):
            for member in CIFAR10_MEMBERS:
                _add_member(archive, member, contents[member])

    atomic_write(path, write, mode=0o644)

    train = batches[:5]
    return GeneratedDataset(
        train_images=np.concatenate([b[0] for b in train]),
        train_labels=np.concatenate([b[1] for b in train]),
        test_images=batches[5][0],
        test_labels=batches[5][1],
    )


#: The datasets :func:`write_synthetic` can generate.
SYNTHETIC_DATASETS: Final[tuple[str, ...]] = ("cifar10", "mnist", "fashion-mnist")

_MARKER_TEXT = """SYNTHETIC {dataset}: generated by `orchard-data synth` (seed {seed}),
not the real dataset.
The files have the official format but random images with a class pattern: use them
for smoke tests only; accuracies measured on them say nothing about the real dataset.
Delete this file and the generated files, then `orchard-data import` the official ones.
"""


def synthetic_marker(data_dir: Path | str, dataset: str) -> Path:
    """Where the marker of a synthetic ``dataset`` under the cache root ``data_dir`` lies."""
    return Path(data_dir) / f"SYNTHETIC-{dataset}.txt"


def is_synthetic(data_dir: Path | str, dataset: str) -> bool:
    """Whether ``dataset`` under the cache root ``data_dir`` came from :func:`write_synthetic`."""
    return synthetic_marker(data_dir, dataset).is_file()


def write_synthetic(
    data_dir: Path | str,
    dataset: str,
    *,
    n_train: int,
    n_test: int,
    seed: int = 0,
) -> list[Path]:
    """Write a synthetic ``dataset`` into the cache root ``data_dir``; the paths written.

    The files go where the loaders look for them (``cifar-10-binary.tar.gz``
    in ``data_dir``; the IDX files in ``data_dir/<dataset>``), with the
    ``SYNTHETIC-<dataset>.txt`` marker written last, so a dataset is marked
    synthetic as soon as it is complete. For CIFAR-10, ``n_train`` is rounded
    up to a multiple of the five training batches and ``n_test`` is ignored
    (each batch, the test batch included, holds ``ceil(n_train / 5)`` records).
    """
    root = Path(data_dir)
    if dataset not in SYNTHETIC_DATASETS:
        raise ValueError(
            f"cannot generate {dataset!r} (choose from {', '.join(SYNTHETIC_DATASETS)})"
        )
    if n_train < 10 or n_test < 10:
        raise ValueError(f"need at least 10 examples per split, got {n_train} and {n_test}")
    root.mkdir(parents=True, exist_ok=True)
    if dataset == "cifar10":
        tarball = root / "cifar-10-binary.tar.gz"
        write_cifar10_tarball(tarball, -(-n_train // 5), seed=seed)
        written = [tarball]
    else:
        directory = root / dataset
        write_mnist_files(directory, n_train, n_test, seed=seed)
        written = [directory / name for name in MNIST_FILENAMES.values()]
    marker = synthetic_marker(root, dataset)
    text = _MARKER_TEXT.format(dataset=dataset, seed=seed).encode()
    atomic_write(marker, lambda out: out.write(text), mode=0o644)
    return [*written, marker]
