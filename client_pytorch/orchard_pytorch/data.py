"""Datasets as batches of normalized tensors, without torchvision.

The files are read, and this client's partition selected, by the shared,
framework-neutral :mod:`orchard.data.client_data` (CIFAR-10's official binary
tarball, MNIST-format IDX files, downloaded, verified and cached), so a
PyTorch and an MXNet client given the same partition settings train on
exactly the same examples; this module turns its uint8 arrays into PyTorch
batches.

Normalization (identical in the MXNet adapter, so both frameworks see the same
inputs; recorded in :data:`orchard.data.client_data.DATASETS`):

* CIFAR-10: ``(x/255 - 0.5) / 0.5`` per channel, as in PyTorch's tutorial;
* MNIST and Fashion-MNIST: plain ``x/255`` (no mean/std), values in [0, 1].

Images stay uint8 in memory and are normalized one batch at a time: the full
CIFAR-10 training set is 150 MB as uint8 but 600 MB as float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from orchard.data.client_data import DATASETS as DATASET_INFO
from orchard.data.client_data import (
    ClientDataset,
    DataError,
    DatasetInfo,
    DataSettings,
    OfficialSplit,
    check_compatible,
)
from orchard.data.partition import PartitionSpec

__all__ = [
    "DATASETS",
    "ClientData",
    "DataError",
    "DataSettings",
    "ImageBatches",
    "ImageSet",
    "normalize",
]


#: Datasets this client reads (every dataset the shared readers know).
DATASETS: tuple[str, ...] = tuple(sorted(DATASET_INFO))


def normalize(images: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 ``(x/255 - mean) / std`` per channel."""
    x = images.to(torch.float32).div_(255.0)
    channels = info.image_shape[0]
    if any(m != 0.0 for m in info.mean):
        x.sub_(torch.tensor(info.mean, dtype=torch.float32).view(1, channels, 1, 1))
    if any(s != 1.0 for s in info.std):
        x.div_(torch.tensor(info.std, dtype=torch.float32).view(1, channels, 1, 1))
    return x


@dataclass(frozen=True, slots=True)
class ImageSet:
    """uint8 images and int64 labels of one split, normalized when batched."""

    images: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo

    @classmethod
    def from_numpy(cls, images: np.ndarray, labels: np.ndarray, info: DatasetInfo) -> ImageSet:
        """Wrap arrays (copied into contiguous tensors)."""
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        return cls(
            torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)),
            torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
            info,
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> ImageBatches:
        """Batches of (normalized float32 images, labels)."""
        return ImageBatches(self, batch_size=batch_size, shuffle=shuffle, seed=seed)


@dataclass(slots=True)
class ImageBatches:
    """An epoch-by-epoch iterable of batches, like a ``DataLoader``.

    Indexing whole batches of a uint8 tensor and normalizing them in one
    operation avoids a DataLoader's per-example Python calls. With
    ``shuffle``, each iteration (epoch) draws a new permutation from a
    generator seeded once, so a run is reproducible and epochs still differ.
    """

    data: ImageSet
    batch_size: int
    shuffle: bool = False
    seed: int = 0
    _generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {self.batch_size}")
        self._generator = torch.Generator()
        self._generator.manual_seed(self.seed)

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        order = torch.randperm(n, generator=self._generator) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if order is None:
                images = self.data.images[start : start + self.batch_size]
                labels = self.data.labels[start : start + self.batch_size]
            else:
                index = order[start : start + self.batch_size]
                images = self.data.images[index]
                labels = self.data.labels[index]
            yield normalize(images, self.data.info), labels


class ClientData(ClientDataset[ImageSet]):
    """One client's data as :class:`ImageSet` splits for ``model_id`` (see :class:`ClientDataset`).

    ``partition=None`` takes the whole training set (the centralized
    baseline); ``preloaded`` hands over splits the client command read before
    joining. A dataset whose images ``model_id`` cannot take is refused here,
    before anything is read.
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
        if settings.dataset not in DATASETS:
            raise DataError(
                f"unknown dataset {settings.dataset!r} for the PyTorch client "
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
        """A split's arrays as a tensor-backed :class:`ImageSet`."""
        return ImageSet.from_numpy(images, labels, self.info)
