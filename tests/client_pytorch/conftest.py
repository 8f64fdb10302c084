"""Generated CIFAR-10 and MNIST files for the PyTorch client's tests.

The shared readers verify files against the official checksums, which
generated files cannot match; the fixtures describe the generated files by
their own checksums (a :class:`~orchard.data.download.Resource` for the
CIFAR-10 tarball, a :class:`~orchard.data.mnist.MnistVariant` for MNIST) and
hand those to :class:`~orchard_pytorch.data.DataSettings`, which is how the
readers verify real downloads too.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from orchard.data.download import Resource
from orchard.data.mnist import MnistVariant
from orchard_pytorch.data import DataSettings
from tests.helpers.datasets import (
    MNIST_FILENAMES,
    GeneratedDataset,
    generated_mnist_variant,
    write_cifar10_tarball,
    write_mnist_files,
)

#: A base URL nobody answers: files must come from the cache, not a download.
UNREACHABLE = "http://127.0.0.1:9/unreachable"

CIFAR_TARBALL = "cifar-10-binary.tar.gz"


def md5_of(path: Path) -> str:
    """The file's MD5, computed here rather than by the code under test."""
    return hashlib.md5(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class GeneratedCifar:
    """A generated tarball, its description and the arrays it holds."""

    arrays: GeneratedDataset
    tarball: Path
    resource: Resource

    def settings(self, data_dir: Path, **overrides: Any) -> DataSettings:
        """Settings that read (or download) this tarball into ``data_dir``."""
        base = DataSettings(dataset="cifar10", data_dir=data_dir, cifar10_resource=self.resource)
        return replace(base, **overrides)


def make_cifar(directory: Path, *, n_per_batch: int, seed: int, base_url: str) -> GeneratedCifar:
    """Write a tarball into ``directory`` and describe it as served from ``base_url``."""
    tarball = directory / CIFAR_TARBALL
    arrays = write_cifar10_tarball(tarball, n_per_batch, seed=seed)
    resource = Resource(CIFAR_TARBALL, f"{base_url}/{CIFAR_TARBALL}", f"md5:{md5_of(tarball)}")
    return GeneratedCifar(arrays=arrays, tarball=tarball, resource=resource)


@pytest.fixture
def cifar(tmp_path: Path) -> GeneratedCifar:
    """A learnable tarball of 5 x 20 training and 20 test records, not yet cached."""
    source = tmp_path / "source"
    return make_cifar(source, n_per_batch=20, seed=0, base_url=UNREACHABLE)


@pytest.fixture
def cifar_data_dir(tmp_path: Path, cifar: GeneratedCifar) -> Path:
    """A data directory holding the generated tarball under its official name."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(cifar.tarball, data_dir / CIFAR_TARBALL)
    return data_dir


@dataclass(frozen=True)
class GeneratedMnist:
    """Generated MNIST files in a cache directory, with their description."""

    arrays: GeneratedDataset
    data_dir: Path
    variant: MnistVariant

    def settings(self, **overrides: Any) -> DataSettings:
        """Settings that read these files."""
        base = DataSettings(
            dataset="mnist", data_dir=self.data_dir, mnist_variant=self.variant, download=False
        )
        return replace(base, **overrides)


@pytest.fixture
def mnist(tmp_path: Path) -> GeneratedMnist:
    """200 training and 50 test learnable MNIST images, in the cache."""
    source = tmp_path / "mnist-source"
    arrays = write_mnist_files(source, 200, 50, seed=1)
    variant = generated_mnist_variant(source, base_url=UNREACHABLE, name="mnist")
    data_dir = tmp_path / "mnist-data"
    (data_dir / "mnist").mkdir(parents=True)
    for filename in MNIST_FILENAMES.values():
        shutil.copy(source / filename, data_dir / "mnist" / filename)
    return GeneratedMnist(arrays=arrays, data_dir=data_dir, variant=variant)
