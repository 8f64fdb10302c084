"""Generated MNIST files for the MXNet client's tests, with their checksums injected.

The shared reader verifies every file against the official checksums, which
generated files cannot match; the fixtures register a variant named "mnist"
(or "fashion-mnist") whose checksums are those of the generated files, which
is exactly how the reader verifies real downloads.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchard.data import mnist as mnist_module
from tests.helpers.datasets import (
    MNIST_FILENAMES,
    UNREACHABLE,
    GeneratedDataset,
    generated_mnist_variant,
    write_mnist_files,
)

__all__ = ["GeneratedMnist", "generated_mnist", "install_generated_mnist"]


@dataclass(frozen=True)
class GeneratedMnist:
    """Generated files: the arrays written, the directory to pass as data_dir."""

    arrays: GeneratedDataset
    data_dir: Path
    source_dir: Path


def install_generated_mnist(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    variant: str = "mnist",
    n_train: int = 300,
    n_test: int = 100,
    seed: int = 0,
    base_url: str = UNREACHABLE,
    cached: bool = True,
) -> GeneratedMnist:
    """Write files, register their checksums as ``variant``, optionally pre-fill the cache."""
    source = tmp_path / "source"
    arrays = write_mnist_files(source, n_train, n_test, seed=seed)
    monkeypatch.setitem(
        mnist_module.VARIANTS,
        variant,
        generated_mnist_variant(source, base_url=base_url, name=variant),
    )
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if cached:
        (data_dir / variant).mkdir()
        for filename in MNIST_FILENAMES.values():
            shutil.copy(source / filename, data_dir / variant / filename)
    return GeneratedMnist(arrays=arrays, data_dir=data_dir, source_dir=source)


@pytest.fixture
def generated_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GeneratedMnist:
    """300 training and 100 test images of learnable MNIST, already in the cache."""
    return install_generated_mnist(tmp_path, monkeypatch)
