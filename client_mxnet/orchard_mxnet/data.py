"""MNIST and Fashion-MNIST for the MXNet client, partitioned like every other client.

The IDX files are read, and this client's share chosen, by the shared,
framework-neutral :mod:`orchard.data.client_data` (which downloads, verifies
and caches them and applies the shared partitioners), so an MXNet and a
PyTorch client given the same partition settings train on exactly the same
examples; this module turns its uint8 arrays into Gluon-ready batches.

Preprocessing is identical to the PyTorch client's for these datasets: plain
``x / 255.0`` as float32 (no mean/std), shaped ``(N, 784)`` for ``mnist-mlp``
and ``(N, 1, 28, 28)`` for ``mnist-cnn``. Images stay uint8 in memory and are
converted one batch at a time, a quarter of the memory of float32 copies.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from orchard.data.client_data import (
    ClientDataset,
    DataError,
    DataSettings,
    OfficialSplit,
    check_compatible,
)
from orchard.data.partition import PartitionSpec
from orchard_mxnet.models import input_shape

__all__ = [
    "DATASETS",
    "ClientData",
    "DataError",
    "DataSettings",
    "ImageSet",
    "preprocess",
]

#: Datasets this client reads: both are four MNIST-format IDX files.
DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist")


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


class ClientData(ClientDataset[ImageSet]):
    """One client's data as :class:`ImageSet` splits for ``model_id`` (see :class:`ClientDataset`).

    ``partition=None`` takes the whole training set (the centralized
    baseline); ``preloaded`` hands over splits the client command read before
    joining. A dataset this client cannot read, or whose images ``model_id``
    cannot take, is refused here, before anything is read.
    """

    def __init__(
        self,
        settings: DataSettings,
        *,
        model_id: str,
        partition: PartitionSpec | None = None,
        partition_id: int = 0,
        seed: int = 0,
        preloaded: Mapping[OfficialSplit, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        input_shape(model_id)  # unknown model ids fail here, before any data is read
        if settings.dataset not in DATASETS:
            raise DataError(
                f"unknown dataset {settings.dataset!r} for the MXNet client "
                f"(choose one of: {', '.join(DATASETS)})"
            )
        check_compatible(model_id, settings.dataset)
        super().__init__(
            settings,
            partition=partition,
            partition_id=partition_id,
            seed=seed,
            preloaded=preloaded,
        )
        self.model_id = model_id

    def wrap(self, images: np.ndarray, labels: np.ndarray) -> ImageSet:
        """A split's (N, 1, 28, 28) arrays as an :class:`ImageSet` of (N, 28, 28) images."""
        return ImageSet(images[:, 0], labels, self.model_id)
