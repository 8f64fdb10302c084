"""Generated CIFAR-10 and MNIST files, described for :class:`orchard.data.client_data.DataSettings`.

The shared readers verify files against the official checksums, which
generated files cannot match; these helpers describe the generated files by
their own checksums (a :class:`~orchard.data.download.Resource` for the
CIFAR-10 tarball, a :class:`~orchard.data.mnist.MnistVariant` for MNIST) and
put those into the settings, which is how the readers verify real downloads
too. Shared by the core data tests and the PyTorch client's tests, whose
conftest modules import the fixtures at the end; NumPy only.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from orchard.data.client_data import DataSettings
from orchard.data.download import Resource
from orchard.data.mnist import MnistVariant
from tests.helpers.datasets import (
    MNIST_FILENAMES,
    UNREACHABLE,
    GeneratedDataset,
    generated_mnist_variant,
    write_cifar10_tarball,
    write_mnist_files,
)

__all__ = [
    "CIFAR_TARBALL",
    "GeneratedCifar",
    "GeneratedMnist",
    "cached_mnist",
    "cifar",
    "cifar_data_dir",
    "make_cifar",
    "md5_of",
    "mnist",
]

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


def make_cifar(
    directory: Path, *, n_per_batch: int = 20, seed: int = 0, base_url: str = UNREACHABLE
) -> GeneratedCifar:
    """Write a tarball into ``directory`` and describe it as served from ``base_url``.

    The defaults make a learnable tarball of 5 x 20 training and 20 test records.
    """
    tarball = directory / CIFAR_TARBALL
    arrays = write_cifar10_tarball(tarball, n_per_batch, seed=seed)
    resource = Resource(CIFAR_TARBALL, f"{base_url}/{CIFAR_TARBALL}", f"md5:{md5_of(tarball)}")
    return GeneratedCifar(arrays=arrays, tarball=tarball, resource=resource)


@dataclass(frozen=True)
class GeneratedMnist:
    """Generated MNIST files in a cache directory, with their description."""

    arrays: GeneratedDataset
    data_dir: Path
    variant: MnistVariant

    def settings(self, **overrides: Any) -> DataSettings:
        """Settings that read these files (without downloading)."""
        base = DataSettings(
            dataset="mnist", data_dir=self.data_dir, mnist_variant=self.variant, download=False
        )
        return replace(base, **overrides)


def cached_mnist(
    root: Path, *, n_train: int = 200, n_test: int = 50, seed: int = 1
) -> GeneratedMnist:
    """Learnable MNIST files written under ``root`` and copied into a cache directory."""
    source = root / "mnist-source"
    arrays = write_mnist_files(source, n_train, n_test, seed=seed)
    variant = generated_mnist_variant(source, base_url=UNREACHABLE, name="mnist")
    data_dir = root / "mnist-data"
    (data_dir / "mnist").mkdir(parents=True)
    for filename in MNIST_FILENAMES.values():
        shutil.copy(source / filename, data_dir / "mnist" / filename)
    return GeneratedMnist(arrays=arrays, data_dir=data_dir, variant=variant)


# --- fixtures (imported by the conftest modules that use them) ---------------------------


@pytest.fixture
def cifar(tmp_path: Path) -> GeneratedCifar:
    """A learnable tarball of 5 x 20 training and 20 test records, not yet cached."""
    return make_cifar(tmp_path / "source")


@pytest.fixture
def cifar_data_dir(tmp_path: Path, cifar: GeneratedCifar) -> Path:
    """A data directory holding the generated tarball under its official name."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(cifar.tarball, data_dir / CIFAR_TARBALL)
    return data_dir


@pytest.fixture
def mnist(tmp_path: Path) -> GeneratedMnist:
    """200 training and 50 test learnable MNIST images, in the cache."""
    return cached_mnist(tmp_path)


#: The metrics every adapter client's fit reports (``orchard.client.adapter.fit_metrics``).
ADAPTER_FIT_METRICS = {
    "train_loss",
    "train_accuracy",
    "train_examples_per_second",
    "fit_examples_per_second",
    "fit_cpu_examples_per_second",
}
