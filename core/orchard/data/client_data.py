"""One client's data as NumPy arrays: which dataset, how it is read, which share is its own.

Every framework client reads its files through the readers of
:mod:`orchard.data` (CIFAR-10's binary tarball, MNIST-format IDX files) and
selects its share with the shared partitioners, here, so a PyTorch and an
MXNet client given the same settings train and validate on exactly the same
examples. An adapter subclasses :class:`ClientDataset` to turn each split's
uint8 images and int64 labels into its own batches or tensors.

Images stay uint8 here: normalization happens one batch at a time in the
adapter (the full CIFAR-10 training set is 150 MB as uint8 but 600 MB as
float32). :data:`DATASETS` records the normalization every adapter applies,
so the frameworks see the same inputs:

* CIFAR-10: ``(x/255 - 0.5) / 0.5`` per channel, as in PyTorch's tutorial;
* MNIST and Fashion-MNIST: plain ``x/255`` (no mean/std), values in [0, 1].
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Final, Generic, Literal, TypeVar

import numpy as np

from orchard.data.cifar10 import CIFAR10_BINARY, load_cifar10
from orchard.data.download import Resource
from orchard.data.mnist import MnistVariant, load_mnist
from orchard.data.partition import PartitionSpec, train_val_split
from orchard.data.synth import is_synthetic

__all__ = [
    "DATASETS",
    "ClientDataset",
    "DataError",
    "DataSettings",
    "DatasetInfo",
    "OfficialSplit",
    "Split",
    "check_compatible",
    "default_dataset",
    "load_split",
]

logger = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
#: The splits a dataset ships with (validation is carved out of "train").
OfficialSplit = Literal["train", "test"]

#: What one split holds once an adapter has wrapped it.
SplitT = TypeVar("SplitT")


class DataError(ValueError):
    """A dataset, model, split or setting does not fit; the message names them."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DatasetInfo:
    """What an adapter needs to know about one dataset."""

    name: str
    #: (channels, height, width) of one image.
    image_shape: tuple[int, int, int]
    #: Per-channel mean and std applied after scaling to [0, 1].
    mean: tuple[float, ...]
    std: tuple[float, ...]


DATASETS: Final[Mapping[str, DatasetInfo]] = {
    "cifar10": DatasetInfo(
        name="cifar10", image_shape=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    ),
    "mnist": DatasetInfo(name="mnist", image_shape=(1, 28, 28), mean=(0.0,), std=(1.0,)),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist", image_shape=(1, 28, 28), mean=(0.0,), std=(1.0,)
    ),
}

#: The images each model id takes, and the dataset it is trained on by default.
_MODEL_INPUTS: Final[Mapping[str, tuple[tuple[int, int, int], str]]] = {
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
    #: Base URL that replaces the official download location (air-gapped
    #: sites; default: the ORCHARD_DATASET_MIRROR environment variable).
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
    """uint8 images (N, C, H, W) and int64 labels (N,) of one official split.

    A dataset marked synthetic (``orchard-data synth``) is read without the
    official checksums, which generated files cannot match, and says so in
    the log every time it is read.
    """
    verify = settings.verify
    if is_synthetic(settings.data_dir, settings.dataset):
        logger.warning(
            "%s in %s is SYNTHETIC (orchard-data synth): smoke-test data, not the real "
            "dataset; its accuracies mean nothing",
            settings.dataset,
            settings.data_dir,
        )
        verify = False
    if settings.dataset == "cifar10":
        images, labels = load_cifar10(
            settings.data_dir,
            split=split,
            download=settings.download,
            mirror=settings.mirror,
            verify=verify,
            resource=settings.cifar10_resource,
        )
    else:
        images, labels = load_mnist(
            settings.data_dir,
            variant=settings.mnist_variant or settings.dataset,
            split=split,
            download=settings.download,
            mirror=settings.mirror,
            verify=verify,
        )
        images = images[:, np.newaxis, :, :]
    expected = DATASETS[settings.dataset].image_shape
    if images.shape[1:] != expected or images.dtype != np.uint8:
        raise DataError(
            f"{settings.dataset} {split} images are {images.dtype}{list(images.shape)}, "
            f"expected uint8[N, {', '.join(map(str, expected))}]"
        )
    return images, labels.astype(np.int64, copy=False)


class ClientDataset(ABC, Generic[SplitT]):
    """One client's data: its partition's train/val splits and the whole test split.

    Each split is read on first use, so an evaluator never loads the training
    set and a trainer that is never asked for test metrics never loads the
    test set. ``partition=None`` takes the whole training set (a centralized
    baseline); otherwise the partition's indices are split into training and
    validation (``settings.val_fraction``, seeded by ``seed``).
    ``preloaded`` hands over splits already read by :func:`load_split`, so a
    client can read its files before joining (a missing dataset then fails at
    start-up, and a download does not eat into the first round's time).

    Subclasses implement :meth:`wrap`, turning a split's arrays into what
    their training loop consumes.
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

    @abstractmethod
    def wrap(self, images: np.ndarray, labels: np.ndarray) -> SplitT:
        """One split as the adapter uses it, from uint8 (N, C, H, W) images and int64 labels."""

    def _load(self, split: OfficialSplit) -> tuple[np.ndarray, np.ndarray]:
        """A split's arrays, handed over once (then dropped) or read from disk."""
        arrays = self._preloaded.pop(split, None)
        return arrays if arrays is not None else load_split(self.settings, split)

    @cached_property
    def _train_val(self) -> tuple[SplitT, SplitT]:
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
            self.wrap(images[train_idx], labels[train_idx]),
            self.wrap(images[val_idx], labels[val_idx]),
        )

    @property
    def train(self) -> SplitT:
        """This partition's training examples."""
        return self._train_val[0]

    @property
    def val(self) -> SplitT:
        """This partition's validation examples."""
        return self._train_val[1]

    @cached_property
    def test(self) -> SplitT:
        """The official test split, whole (the same for every client)."""
        images, labels = self._load("test")
        logger.info("%s: %d test examples", self.settings.dataset, len(labels))
        return self.wrap(images, labels)

    def split(self, name: str) -> SplitT:
        """The split called ``name`` (train, val or test)."""
        if name == "train":
            return self.train
        if name == "val":
            return self.val
        if name == "test":
            return self.test
        raise DataError(f"unknown split {name!r} (expected train, val or test)")
