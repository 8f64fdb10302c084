"""MNIST and Fashion-MNIST for the MXNet client, partitioned like every other client.

The IDX files are read by the shared, framework-neutral reader
(:func:`orchard.data.mnist.load_mnist`), which downloads, verifies and caches
them, and this client's share is chosen by the shared partitioners
(:mod:`orchard.data.partition`), so an MXNet and a PyTorch client given the
same partition settings train on exactly the same examples.

Preprocessing is identical to the PyTorch client's for these datasets: plain
``x / 255.0`` as float32 (no mean/std), shaped ``(N, 784)`` for ``mnist-mlp``
and ``(N, 1, 28, 28)`` for ``mnist-cnn``. Images stay uint8 in memory and are
converted one batch at a time, a quarter of the memory of float32 copies.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from orchard.data.mnist import load_mnist
from orchard.data.partition import PartitionSpec, train_val_split
from orchard_mxnet.models import input_shape

__all__ = [
    "DATASETS",
    "ClientData",
    "DataError",
    "DataSettings",
    "ImageSet",
    "load_split",
    "preprocess",
]

_log = logging.getLogger(__name__)

#: Datasets this client reads: both are four MNIST-format IDX files.
DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist")


class DataError(ValueError):
    """A dataset, split or partition setting is unknown or inconsistent; names it."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DataSettings:
    """Which dataset, where it is cached and how it may be fetched."""

    dataset: str = "mnist"
    data_dir: Path
    download: bool = True
    #: Base URL replacing the official download location (default: the
    #: ORCHARD_DATASET_MIRROR environment variable, else the official one).
    mirror: str | None = None
    #: Fraction of each partition held out for validation; 0 keeps all for training.
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise DataError(
                f"unknown dataset {self.dataset!r} for the MXNet client "
                f"(choose one of: {', '.join(DATASETS)})"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise DataError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


def preprocess(images: np.ndarray, model_id: str) -> np.ndarray:
    """uint8 images (N, 28, 28) -> float32 ``x / 255.0`` in the model's input shape."""
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
        raise DataError(
            f"expected uint8 images of shape (N, 28, 28), got {images.dtype}{list(images.shape)}"
        )
    x = images.astype(np.float32) / np.float32(255.0)
    return x.reshape((len(images), *input_shape(model_id)))


@dataclass(frozen=True, slots=True)
class ImageSet:
    """uint8 images (N, 28, 28) and int64 labels (N,), preprocessed per batch for one model."""

    images: np.ndarray
    labels: np.ndarray
    model_id: str

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels")
        input_shape(self.model_id)  # unknown model ids fail here, not mid-training

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed float32 inputs and int64 labels of the examples at ``index``."""
        return preprocess(self.images[index], self.model_id), self.labels[index]

    def batches(
        self, batch_size: int, order: np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Consecutive batches in ``order`` (default: file order); the last may be smaller."""
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}")
        indices = np.arange(len(self)) if order is None else order
        for start in range(0, len(indices), batch_size):
            yield self.batch(indices[start : start + batch_size])

    def num_batches(self, batch_size: int) -> int:
        """How many batches :meth:`batches` yields."""
        return -(-len(self) // batch_size)


def load_split(
    settings: DataSettings, split: Literal["train", "test"]
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) and int64 labels (N,) of one official split."""
    images, labels = load_mnist(
        settings.data_dir,
        variant=settings.dataset,
        split=split,
        download=settings.download,
        mirror=settings.mirror,
    )
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{settings.dataset} {split} images are {images.dtype}{list(images.shape)}, "
            "expected uint8[N, 28, 28]"
        )
    return images, labels.astype(np.int64, copy=False)


class ClientData:
    """One client's data: its partition's train/val splits and the whole test split.

    Each split is read on first use, so an evaluator never loads the training
    set and a trainer that is never asked for test metrics never loads the
    test set. ``partition=None`` takes the whole training set (the
    centralized baseline).
    """

    def __init__(
        self,
        settings: DataSettings,
        *,
        model_id: str,
        partition: PartitionSpec | None = None,
        partition_id: int = 0,
        seed: int = 0,
    ) -> None:
        input_shape(model_id)
        self.settings = settings
        self.model_id = model_id
        self.partition = partition
        self.partition_id = partition_id
        self.seed = seed

    @cached_property
    def _train_val(self) -> tuple[ImageSet, ImageSet]:
        images, labels = load_split(self.settings, "train")
        if self.partition is None:
            indices = np.arange(len(labels))
            where = "the whole training set"
        else:
            indices = np.asarray(self.partition.select(labels, self.partition_id))
            where = f"partition {self.partition_id} of {self.partition.num_partitions}"
        if self.settings.val_fraction > 0:
            train_idx, val_idx = train_val_split(
                indices, val_fraction=self.settings.val_fraction, seed=self.seed
            )
        else:
            train_idx, val_idx = indices, indices[:0]
        _log.info(
            "%s: %s, %d training and %d validation examples",
            self.settings.dataset,
            where,
            len(train_idx),
            len(val_idx),
        )
        return (
            ImageSet(images[train_idx], labels[train_idx], self.model_id),
            ImageSet(images[val_idx], labels[val_idx], self.model_id),
        )

    @property
    def train(self) -> ImageSet:
        """This partition's training examples."""
        return self._train_val[0]

    @property
    def val(self) -> ImageSet:
        """This partition's validation examples."""
        return self._train_val[1]

    @cached_property
    def test(self) -> ImageSet:
        """The official test split, whole (the same for every client)."""
        images, labels = load_split(self.settings, "test")
        _log.info("%s: %d test examples", self.settings.dataset, len(labels))
        return ImageSet(images, labels, self.model_id)

    def split(self, name: str) -> ImageSet:
        """The split called ``name`` (train, val or test)."""
        if name == "train":
            return self.train
        if name == "val":
            return self.val
        if name == "test":
            return self.test
        raise DataError(f"unknown split {name!r} (expected train, val or test)")
