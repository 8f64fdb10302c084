"""Datasets as batches of normalized tensors, without torchvision.

The files are read by the shared, framework-neutral readers of
:mod:`orchard.data` (CIFAR-10's official binary tarball, MNIST-format IDX
files), which download, verify and cache them; this module turns their uint8
arrays into PyTorch batches and selects this client's partition through the
shared partitioners, so a PyTorch and an MXNet client given the same partition
settings train on exactly the same examples.

Normalization (identical in the MXNet adapter, so both frameworks see the same
inputs):

* CIFAR-10: ``(x/255 - 0.5) / 0.5`` per channel, as in PyTorch's tutorial;
* MNIST and Fashion-MNIST: plain ``x/255`` (no mean/std), values in [0, 1].

Images stay uint8 in memory and are normalized one batch at a time: the full
CIFAR-10 training set is 150 MB as uint8 but 600 MB as float32.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from orchard.data.cifar10 import CIFAR10_BINARY, load_cifar10
from orchard.data.download import Resource
from orchard.data.mnist import MnistVariant, load_mnist
from orchard.data.partition import PartitionSpec, train_val_split

__all__ = [
    "DATASETS",
    "DataBundle",
    "DataError",
    "DataSettings",
    "DatasetInfo",
    "ImageBatches",
    "ImageSet",
    "OfficialSplit",
    "Split",
    "check_compatible",
    "default_dataset",
    "load_split",
    "normalize",
]

logger = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
#: The splits a dataset ships with (validation is carved out of "train").
OfficialSplit = Literal["train", "test"]


class DataError(ValueError):
    """A dataset, model and split do not fit together; the message names them."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DatasetInfo:
    """What the adapter needs to know about one dataset."""

    name: str
    #: (channels, height, width) of one image.
    image_shape: tuple[int, int, int]
    #: Per-channel mean and std applied after scaling to [0, 1].
    mean: tuple[float, ...]
    std: tuple[float, ...]


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        name="cifar10", image_shape=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    ),
    "mnist": DatasetInfo(name="mnist", image_shape=(1, 28, 28), mean=(0.0,), std=(1.0,)),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist", image_shape=(1, 28, 28), mean=(0.0,), std=(1.0,)
    ),
}

#: The input each model id expects, and the dataset it is trained on by default.
_MODEL_INPUTS: dict[str, tuple[tuple[int, int, int], str]] = {
    "cifar10-cnn": ((3, 32, 32), "cifar10"),
    "mnist-cnn": ((1, 28, 28), "mnist"),
    "mnist-mlp": ((1, 28, 28), "mnist"),
}


def _dataset_info(dataset: str) -> DatasetInfo:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise DataError(
            f"unknown dataset {dataset!r} (known: {', '.join(sorted(DATASETS))})"
        ) from None


def default_dataset(model_id: str) -> str:
    """The dataset ``model_id`` is meant for (``cifar10`` or ``mnist``)."""
    try:
        return _MODEL_INPUTS[model_id][1]
    except KeyError:
        raise DataError(
            f"unknown model id {model_id!r} (known: {', '.join(sorted(_MODEL_INPUTS))})"
        ) from None


def check_compatible(model_id: str, dataset: str) -> None:
    """Refuse a model/dataset pair whose image shapes differ, before any download."""
    default_dataset(model_id)
    expected = _MODEL_INPUTS[model_id][0]
    info = _dataset_info(dataset)
    if info.image_shape != expected:
        raise DataError(
            f"model {model_id!r} takes {'x'.join(map(str, expected))} images, but dataset "
            f"{dataset!r} has {'x'.join(map(str, info.image_shape))} images"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class DataSettings:
    """Which dataset, where it is cached and how it may be fetched."""

    dataset: str
    data_dir: Path
    download: bool = True
    #: Base URL that replaces the official download location (air-gapped sites).
    mirror: str | None = None
    #: Check files found on disk against the official checksums (downloads
    #: are always verified); off for re-packed or generated files.
    verify: bool = True
    #: Fraction of each partition held out for validation; 0 keeps all for training.
    val_fraction: float = 0.1
    #: Replacements for the official file descriptions (URL, checksum), for
    #: re-hosted copies and for tests that serve generated files.
    cifar10_resource: Resource = CIFAR10_BINARY
    mnist_variant: MnistVariant | None = None

    def __post_init__(self) -> None:
        _dataset_info(self.dataset)
        if not 0.0 <= self.val_fraction < 1.0:
            raise DataError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


def load_split(settings: DataSettings, split: OfficialSplit) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, C, H, W) and int64 labels (N,) of one official split."""
    if settings.dataset == "cifar10":
        images, labels = load_cifar10(
            settings.data_dir,
            split=split,
            download=settings.download,
            mirror=settings.mirror,
            verify=settings.verify,
            resource=settings.cifar10_resource,
        )
    else:
        images, labels = load_mnist(
            settings.data_dir,
            variant=settings.mnist_variant or settings.dataset,
            split=split,
            download=settings.download,
            mirror=settings.mirror,
            verify=settings.verify,
        )
        images = images[:, np.newaxis, :, :]
    expected = DATASETS[settings.dataset].image_shape
    if images.shape[1:] != expected or images.dtype != np.uint8:
        raise DataError(
            f"{settings.dataset} {split} images are {images.dtype}{list(images.shape)}, "
            f"expected uint8[N, {', '.join(map(str, expected))}]"
        )
    return images, labels.astype(np.int64, copy=False)


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


class DataBundle:
    """One client's data: its partition's train/val splits and the test split.

    Each split is read on first use, so an evaluator never loads the training
    set and a trainer that is never asked for test metrics never loads the
    test set. ``partition=None`` takes the whole training set (the
    centralized baseline). ``preloaded`` hands over splits already read by
    :func:`load_split`: the client command reads its files before joining,
    so a missing dataset fails at start-up and a download does not eat into
    the first round's time.
    """

    def __init__(
        self,
        settings: DataSettings,
        *,
        partition: PartitionSpec | None = None,
        partition_id: int = 0,
        seed: int = 0,
        preloaded: Mapping[OfficialSplit, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        self.settings = settings
        self.info = DATASETS[settings.dataset]
        self.partition = partition
        self.partition_id = partition_id
        self.seed = seed
        self._preloaded = dict(preloaded or {})

    def _load(self, split: OfficialSplit) -> tuple[np.ndarray, np.ndarray]:
        """A split's arrays, handed over once (then dropped) or read from disk."""
        arrays = self._preloaded.pop(split, None)
        return arrays if arrays is not None else load_split(self.settings, split)

    @cached_property
    def _train_val(self) -> tuple[ImageSet, ImageSet]:
        images, labels = self._load("train")
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
        logger.info(
            "%s: %s, %d training and %d validation examples",
            self.settings.dataset,
            where,
            len(train_idx),
            len(val_idx),
        )
        return (
            ImageSet.from_numpy(images[train_idx], labels[train_idx], self.info),
            ImageSet.from_numpy(images[val_idx], labels[val_idx], self.info),
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
        images, labels = self._load("test")
        logger.info("%s: %d test examples", self.settings.dataset, len(labels))
        return ImageSet.from_numpy(images, labels, self.info)

    def split(self, name: str) -> ImageSet:
        """The split called ``name`` (train, val or test)."""
        if name == "train":
            return self.train
        if name == "val":
            return self.val
        if name == "test":
            return self.test
        raise DataError(f"unknown split {name!r} (expected train, val or test)")

    def loader(
        self, split: str, batch_size: int, *, shuffle: bool = False, seed: int = 0
    ) -> ImageBatches:
        """Batches of one split."""
        return self.split(split).batches(batch_size, shuffle=shuffle, seed=seed)
