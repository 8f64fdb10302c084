"""Test helpers over :mod:`orchard.data.synth` (the official-format generators).

The writers moved into product code (``orchard-data synth``); they are
re-exported here so tests keep importing them from one place. What remains
is test-only: a base URL nobody answers and an ``MnistVariant`` pinned to
generated files.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from orchard.data.download import Resource
from orchard.data.mnist import IdxFile, MnistVariant
from orchard.data.synth import (
    CIFAR10_MEMBERS,
    MNIST_FILENAMES,
    GeneratedDataset,
    write_cifar10_tarball,
    write_mnist_files,
)

__all__ = [
    "CIFAR10_MEMBERS",
    "MNIST_FILENAMES",
    "UNREACHABLE",
    "GeneratedDataset",
    "generated_mnist_variant",
    "write_cifar10_tarball",
    "write_mnist_files",
]

#: A base URL nobody answers: generated files must come from a cache or a mirror,
#: so a download attempt fails loudly.
UNREACHABLE = "http://127.0.0.1:9/unreachable"


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
