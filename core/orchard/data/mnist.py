"""MNIST and Fashion-MNIST from their official IDX files.

Both datasets ship as four gzip-compressed IDX files with the same names
(``train-images-idx3-ubyte.gz`` and so on). The URLs and MD5 checksums are
the official ones, as pinned by torchvision's ``MNIST`` and ``FashionMNIST``
classes.

Where files come from, in order:

1. ``data_dir`` itself, so a directory holding the four files -- for example
   ``/usr/share/datasets/fashion-mnist`` from Debian's ``dataset-fashion-mnist``
   package -- can be passed directly;
2. ``data_dir/<variant>`` (``data_dir/mnist``, ``data_dir/fashion-mnist``), the
   download cache, kept per variant because both datasets use the same names;
3. a download into ``data_dir/<variant>`` (unless ``download=False``).

Each file may be present under any of the standard names: ``.gz`` or
uncompressed, ``train-images-idx3-ubyte`` or ``train-images.idx3-ubyte``.

Verification. Files found on disk are verified too (``verify=True``, the
default), not only downloads: a wrong or damaged file placed by hand fails
loudly instead of training a model on the wrong data. A ``.gz`` file passes if
it is byte-identical to the official archive, or if its decompressed content
has the official content digest. The second rule exists because
redistributors re-pack archives: Debian's Fashion-MNIST files carry the
official deflate streams but a normalised gzip header (no file name, a
different timestamp), so their MD5 differs from the official one while the
data are identical. Content digests are known for Fashion-MNIST (computed
from those files after proving them official; see the tests); for MNIST only
the official archives can be verified, so uncompressed or re-packed MNIST
files need ``verify=False``. A file that fails verification is skipped with a
warning and the next source is tried.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np

from orchard.data.download import DownloadError, Resource, compute_digest, fetch
from orchard.data.errors import DatasetError
from orchard.data.idx import IdxFormatError, parse_idx

__all__ = [
    "FASHION_MNIST",
    "MNIST",
    "VARIANTS",
    "IdxFile",
    "MnistVariant",
    "load_mnist",
]

logger = logging.getLogger(__name__)

Split = Literal["train", "test"]
SPLITS: Final[tuple[str, ...]] = ("train", "test")


@dataclass(frozen=True, slots=True)
class IdxFile:
    """One IDX file of a dataset: its official archive and, if known, its content digest.

    Attributes:
        resource: the official ``.gz`` archive (file name, URL, archive checksum).
        content_sha256: SHA-256 of the decompressed IDX bytes, which identifies
            the data independently of how it was compressed; ``None`` if unknown.
    """

    resource: Resource
    content_sha256: str | None = None

    @property
    def stem(self) -> str:
        """The uncompressed file name, e.g. ``train-images-idx3-ubyte``."""
        name = self.resource.filename
        return name[: -len(".gz")] if name.endswith(".gz") else name

    def candidate_names(self) -> tuple[str, ...]:
        """The standard names this file goes by, in order of preference."""
        dotted = self.stem.replace("-idx", ".idx", 1)
        return (f"{self.stem}.gz", self.stem, f"{dotted}.gz", dotted)


@dataclass(frozen=True, kw_only=True, slots=True)
class MnistVariant:
    """A dataset in MNIST's layout: four IDX files of 28x28 uint8 images and labels.

    Attributes:
        name: the variant's name, also the cache subdirectory.
        train_images, train_labels, test_images, test_labels: its four files.
        num_classes: labels must lie in ``range(num_classes)``.
        alternative_mirrors: other base URLs serving the same files, quoted
            in download errors.
    """

    name: str
    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile
    num_classes: int = 10
    alternative_mirrors: tuple[str, ...] = ()

    def files(self, split: str) -> tuple[IdxFile, IdxFile]:
        """The (images, labels) files of ``split``."""
        if split == "train":
            return self.train_images, self.train_labels
        if split == "test":
            return self.test_images, self.test_labels
        raise DatasetError(f"split {split!r} is not supported (supported: {', '.join(SPLITS)})")


def _official(base_url: str, stem: str, md5: str, content_sha256: str | None = None) -> IdxFile:
    filename = f"{stem}.gz"
    return IdxFile(Resource(filename, f"{base_url}/{filename}", f"md5:{md5}"), content_sha256)


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist"
_FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"

#: MNIST (LeCun, Cortes & Burges), from the S3 mirror torchvision uses; the
#: original site is the documented alternative.
MNIST: Final = MnistVariant(
    name="mnist",
    train_images=_official(
        _MNIST_URL, "train-images-idx3-ubyte", "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    ),
    train_labels=_official(
        _MNIST_URL, "train-labels-idx1-ubyte", "d53e105ee54ea40749a09fcbcd1e9432"
    ),
    test_images=_official(_MNIST_URL, "t10k-images-idx3-ubyte", "9fb629c4189551a2d022fa330f9573f3"),
    test_labels=_official(_MNIST_URL, "t10k-labels-idx1-ubyte", "ec29112dd5afa0611ce80d1b7f02629c"),
    alternative_mirrors=("http://yann.lecun.com/exdb/mnist",),
)

#: Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747), from
#: Zalando Research's S3 bucket.
FASHION_MNIST: Final = MnistVariant(
    name="fashion-mnist",
    train_images=_official(
        _FASHION_MNIST_URL,
        "train-images-idx3-ubyte",
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    train_labels=_official(
        _FASHION_MNIST_URL,
        "train-labels-idx1-ubyte",
        "25c81989df183df01b3e8a0aad5dffbe",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    test_images=_official(
        _FASHION_MNIST_URL,
        "t10k-images-idx3-ubyte",
        "bef4ecab320f06d8554ea6380940ec79",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    test_labels=_official(
        _FASHION_MNIST_URL,
        "t10k-labels-idx1-ubyte",
        "bb300cfdad3c16e7a12a480ee83cd310",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
    alternative_mirrors=(
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion",
    ),
)

#: The variants :func:`load_mnist` knows by name.
VARIANTS: Final[dict[str, MnistVariant]] = {v.name: v for v in (MNIST, FASHION_MNIST)}


def _read_content(path: Path) -> bytes:
    """The uncompressed bytes of an IDX file, decompressing ``.gz`` names."""
    if not path.name.endswith(".gz"):
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise IdxFormatError(f"{path}: damaged or truncated gzip data ({exc})") from exc


def _load_verified(path: Path, idx_file: IdxFile, verify: bool) -> tuple[np.ndarray | None, str]:
    """Parse ``path`` if it passes verification; else return ``(None, why it was rejected)``."""
    if not verify:
        return parse_idx(_read_content(path), source=str(path)), ""
    is_gz = path.name.endswith(".gz")
    archive_problem = ""
    if is_gz:
        checksum = idx_file.resource.parsed_checksum
        archive_digest = compute_digest(path, checksum.algorithm)
        if archive_digest == checksum.hexdigest:
            return parse_idx(_read_content(path), source=str(path)), ""
        archive_problem = (
            f"its {checksum.algorithm} is {archive_digest}, not the official {checksum}"
        )
    if idx_file.content_sha256 is None:
        if is_gz:
            return None, f"{archive_problem}, and no official digest of its content is known"
        return None, (
            "no official checksum of the uncompressed file is known; use the official "
            ".gz file or pass verify=False"
        )
    content = _read_content(path)
    content_digest = hashlib.sha256(content).hexdigest()
    if content_digest != idx_file.content_sha256:
        prefix = f"{archive_problem} and " if archive_problem else ""
        return None, (
            f"{prefix}its uncompressed content has sha256 {content_digest}, not the official "
            f"{idx_file.content_sha256}"
        )
    if is_gz:
        logger.info(
            "%s: verified by its uncompressed content (the gzip archive differs from the "
            "official one, as in re-packed distributions)",
            path,
        )
    return parse_idx(content, source=str(path)), ""


def _locate_and_load(
    idx_file: IdxFile,
    search_dirs: list[Path],
    cache_dir: Path,
    *,
    download: bool,
    mirror: str | None,
    verify: bool,
    alternative_mirrors: tuple[str, ...],
) -> tuple[np.ndarray, Path]:
    rejected: list[str] = []
    for directory in search_dirs:
        for name in idx_file.candidate_names():
            path = directory / name
            if not path.is_file():
                continue
            array, reason = _load_verified(path, idx_file, verify)
            if array is not None:
                return array, path
            logger.warning("ignoring %s: %s", path, reason)
            rejected.append(f"{path} ({reason})")
    searched = ", ".join(str(d) for d in search_dirs)
    found = f"; rejected: {'; '.join(rejected)}" if rejected else ""
    if not download:
        raise DatasetError(
            f"no usable {idx_file.stem} (names tried: {', '.join(idx_file.candidate_names())}) "
            f"in {searched}{found}; place the official {idx_file.resource.filename} "
            f"({idx_file.resource.url}) in {cache_dir}, or pass download=True"
        )
    try:
        path = fetch(idx_file.resource, cache_dir, mirror=mirror)
    except DownloadError as exc:
        alternatives = (
            f"; alternative mirrors: {', '.join(alternative_mirrors)}"
            if alternative_mirrors
            else ""
        )
        raise DownloadError(f"{exc}{alternatives}{found}") from exc
    return parse_idx(_read_content(path), source=str(path)), path


def load_mnist(
    data_dir: Path | str,
    *,
    variant: str | MnistVariant = "mnist",
    split: Split = "train",
    download: bool = True,
    mirror: str | None = None,
    verify: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of MNIST or Fashion-MNIST as ``(images, labels)``.

    Returns ``images`` as ``uint8`` of shape ``(N, 28, 28)`` and ``labels`` as
    ``int64`` of shape ``(N,)``. See the module docstring for where files are
    looked for and how they are verified.

    Args:
        data_dir: a directory holding the files, or the cache root.
        variant: ``"mnist"``, ``"fashion-mnist"`` or a custom :class:`MnistVariant`.
        split: ``"train"`` or ``"test"``.
        download: fetch missing files into ``data_dir/<variant>``.
        mirror: base URL replacing the official one (else ``ORCHARD_DATASET_MIRROR``).
        verify: check files found on disk against the official checksums.

    Raises:
        DatasetError: files are missing (with ``download=False``), fail
            verification, or do not hold matching images and labels.
        DownloadError: a download failed.
        IdxFormatError: a file is not a valid IDX file.
    """
    if isinstance(variant, str):
        if variant not in VARIANTS:
            raise DatasetError(
                f"variant {variant!r} is not supported (supported: {', '.join(VARIANTS)})"
            )
        spec = VARIANTS[variant]
    else:
        spec = variant
    images_file, labels_file = spec.files(split)
    root = Path(data_dir)
    cache_dir = root / spec.name
    search_dirs = [root, cache_dir]
    loaded = [
        _locate_and_load(
            idx_file,
            search_dirs,
            cache_dir,
            download=download,
            mirror=mirror,
            verify=verify,
            alternative_mirrors=spec.alternative_mirrors,
        )
        for idx_file in (images_file, labels_file)
    ]
    (images, images_path), (labels, labels_path) = loaded

    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetError(
            f"{images_path}: expected uint8 images of shape (N, 28, 28), "
            f"got {images.dtype} of shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetError(
            f"{labels_path}: expected a 1-D uint8 label array, "
            f"got {labels.dtype} of shape {labels.shape}"
        )
    if labels.shape[0] != images.shape[0]:
        raise DatasetError(
            f"{labels_path} holds {labels.shape[0]} labels but {images_path} holds "
            f"{images.shape[0]} images"
        )
    if labels.size and int(labels.max()) >= spec.num_classes:
        raise DatasetError(
            f"{labels_path}: label {int(labels.max())} is outside 0..{spec.num_classes - 1}"
        )
    return images, labels.astype(np.int64)
