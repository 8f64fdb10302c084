"""CIFAR-10 from its official binary distribution, without pickle.

Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images";
files from https://www.cs.toronto.edu/~kriz/cifar.html. The site offers
Python pickles and a binary version; Orchard reads only the binary version,
because unpickling a downloaded file can run arbitrary code.

``cifar-10-binary.tar.gz`` holds ``cifar-10-batches-bin/`` with
``data_batch_1.bin`` .. ``data_batch_5.bin`` (training), ``test_batch.bin``
and ``batches.meta.txt`` (class names). Each batch is a sequence of 3073-byte
records: one label byte, then 3072 pixel bytes -- the 1024 red, then 1024
green, then 1024 blue values of a 32x32 image, each plane row-major -- which
is exactly a ``(3, 32, 32)`` channel-first array. Every batch holds the same
number of records (10,000 in the official files), which is how a batch cut
short at a record boundary is told from a whole one.

Where files come from, in order: batch files already extracted in
``data_dir/cifar-10-batches-bin`` (or in ``data_dir`` itself); else the
tarball at ``data_dir/cifar-10-binary.tar.gz``, verified and extracted once;
else a download of the tarball (unless ``download=False``). Extraction writes
to a temporary directory that is renamed into place, so an interrupted
extraction is never mistaken for a complete one, and only regular files
directly under ``cifar-10-batches-bin/`` are accepted (no absolute paths,
``..``, links or devices), so a tampered archive cannot write outside the
cache. The compressed stream is read to its end, so gzip's CRC-32 is checked
even when the checksum of the tarball is not (``verify=False``): a damaged
archive is refused instead of extracting wrong pixels.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Final, Literal

import numpy as np

from orchard.data.download import Resource, fetch
from orchard.data.errors import DatasetError

__all__ = [
    "BATCHES_DIR",
    "CIFAR10_BINARY",
    "CLASSES",
    "RECORD_BYTES",
    "TEST_FILES",
    "TRAIN_FILES",
    "load_cifar10",
    "read_batch",
]

logger = logging.getLogger(__name__)

Split = Literal["train", "test"]

#: The official binary tarball (MD5 as published on the CIFAR page).
CIFAR10_BINARY: Final = Resource(
    "cifar-10-binary.tar.gz",
    "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    "md5:c32a1d4ab5d03f1284b67883e8d87530",
)

#: The directory the tarball extracts to.
BATCHES_DIR: Final = "cifar-10-batches-bin"
TRAIN_FILES: Final[tuple[str, ...]] = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES: Final[tuple[str, ...]] = ("test_batch.bin",)

#: Class names in label order, as in ``batches.meta.txt``.
CLASSES: Final[tuple[str, ...]] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

IMAGE_SHAPE: Final = (3, 32, 32)
#: One label byte plus 3 x 32 x 32 pixel bytes.
RECORD_BYTES: Final = 1 + 3 * 32 * 32

_COPY_CHUNK = 1 << 20


def read_batch(
    path: Path | str, *, expected_records: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read one binary batch file as ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``.

    Raises:
        DatasetError: the size is not a whole number of 3073-byte records, the
            file is empty, it holds other than ``expected_records`` records
            (a file cut at a record boundary), or a label byte is not a class
            index (0..9), which is what a misaligned or foreign file looks like.
    """
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0 or data.size % RECORD_BYTES:
        raise DatasetError(
            f"{path}: size {data.size} bytes is not a positive multiple of the {RECORD_BYTES}-byte "
            "CIFAR-10 record (1 label byte + 3072 pixel bytes); the file is truncated or is "
            "not a CIFAR-10 binary batch"
        )
    records = data.reshape(-1, RECORD_BYTES)
    if expected_records is not None and len(records) != expected_records:
        raise DatasetError(
            f"{path}: {len(records)} records, but every CIFAR-10 batch holds the same number "
            f"({expected_records} in its sibling files; 10000 in the official ones); the file is "
            f"truncated: delete {path.parent} to extract the archive again"
        )
    labels = records[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels >= len(CLASSES))
    if bad.size:
        raise DatasetError(
            f"{path}: record {int(bad[0])} has label byte {int(labels[bad[0]])}, not a class "
            f"index 0..{len(CLASSES) - 1}; the file is damaged or not a CIFAR-10 binary batch"
        )
    images = np.ascontiguousarray(records[:, 1:]).reshape(-1, *IMAGE_SHAPE)
    return images, labels


def _records_per_batch(directory: Path) -> int | None:
    """The record count of the largest batch file in ``directory`` (None: no batch files).

    All batches of the distribution hold the same number of records, so a
    file with fewer than its largest sibling was cut short.
    """
    sizes = [
        (directory / name).stat().st_size
        for name in TRAIN_FILES + TEST_FILES
        if (directory / name).is_file()
    ]
    return max(sizes) // RECORD_BYTES if sizes else None


def _has_all(directory: Path, names: tuple[str, ...]) -> bool:
    return all((directory / name).is_file() for name in names)


def _safe_member_name(member: tarfile.TarInfo, tar_path: Path) -> str | None:
    """The file name to extract ``member`` as, ``None`` to skip it (the directory entry).

    Anything that could escape the target directory or is not plain data is
    refused with an error rather than skipped, since the official archive
    contains nothing of the kind.
    """
    name = member.name.removeprefix("./").rstrip("/")
    if member.isdir() and name == BATCHES_DIR:
        return None
    parts = name.split("/")
    if (
        not member.isfile()
        or len(parts) != 2
        or parts[0] != BATCHES_DIR
        or parts[1] in {"", ".", ".."}
        or "\\" in parts[1]
    ):
        raise DatasetError(
            f"{tar_path}: refusing archive member {member.name!r}: only regular files directly "
            f"under {BATCHES_DIR}/ are expected in a CIFAR-10 binary archive"
        )
    return parts[1]


def _extract(tar_path: Path, target: Path) -> None:
    """Extract the batches of ``tar_path`` into ``target`` atomically (temp dir + rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        try:
            with tarfile.open(tar_path, "r:*") as archive:
                for member in archive:
                    name = _safe_member_name(member, tar_path)
                    if name is None:
                        continue
                    source = archive.extractfile(member)
                    if source is None:  # pragma: no cover - isfile() members always have data
                        raise DatasetError(f"{tar_path}: member {member.name!r} has no data")
                    with source, open(staging / name, "wb") as out:
                        shutil.copyfileobj(source, out, _COPY_CHUNK)
                        out.flush()
                        os.fsync(out.fileno())
                # tarfile stops at the end-of-archive blocks, before the
                # gzip trailer: read the stream to its end so the CRC-32 and
                # length are checked (BadGzipFile, an OSError, when wrong).
                stream = archive.fileobj
                if stream is not None:
                    while stream.read(_COPY_CHUNK):
                        pass
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise DatasetError(
                f"{tar_path}: cannot extract the archive ({exc}); it is damaged or truncated: "
                "delete it to download it again"
            ) from exc
        missing = [name for name in TRAIN_FILES + TEST_FILES if not (staging / name).is_file()]
        if missing:
            raise DatasetError(
                f"{tar_path} lacks {', '.join(f'{BATCHES_DIR}/{name}' for name in missing)}; "
                "it is not the CIFAR-10 binary archive"
            )
        staging.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            os.replace(staging, target)
        except OSError:
            # Another process finished the same extraction first; theirs is as good.
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_cifar10(
    data_dir: Path | str,
    *,
    split: Split,
    download: bool = True,
    mirror: str | None = None,
    verify: bool = True,
    resource: Resource = CIFAR10_BINARY,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of CIFAR-10 as ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``.

    Args:
        data_dir: cache root (or a directory holding extracted batch files).
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000 images).
        download: fetch the tarball if it is not in ``data_dir``.
        mirror: base URL replacing the official one (else ``ORCHARD_DATASET_MIRROR``).
        verify: check a tarball found in ``data_dir`` against the official
            checksum before extracting it (downloads are always verified).
            Batch files found already extracted are used as they are.
        resource: the tarball to use; tests substitute their own.

    Raises:
        DatasetError: files are missing (with ``download=False``), fail
            verification, or are damaged.
        DownloadError: a download failed.
    """
    if split == "train":
        names = TRAIN_FILES
    elif split == "test":
        names = TEST_FILES
    else:
        raise DatasetError(f"split {split!r} is not supported (supported: train, test)")
    root = Path(data_dir)
    batches = root / BATCHES_DIR
    if not _has_all(batches, names) and _has_all(root, names):
        batches = root
    if not _has_all(batches, names):
        if batches.exists():
            missing = [name for name in names if not (batches / name).is_file()]
            raise DatasetError(
                f"{batches} exists but lacks {', '.join(missing)}; delete the directory to "
                f"extract {resource.filename} again"
            )
        tar_path = root / resource.filename
        if download and (verify or not tar_path.is_file()):
            tar_path = fetch(resource, root, mirror=mirror)
        elif not tar_path.is_file():
            raise DatasetError(
                f"CIFAR-10 not found: neither {batches} nor {tar_path} exists; place the "
                f"official {resource.filename} ({resource.url}) at {tar_path}, or pass "
                "download=True"
            )
        elif verify and not resource.parsed_checksum.matches_file(tar_path):
            raise DatasetError(
                f"{tar_path} does not match the official checksum {resource.checksum}; replace "
                "it with the official file, pass download=True to download it again, or "
                "verify=False to use it anyway"
            )
        logger.info("extracting %s into %s", tar_path, batches)
        _extract(tar_path, batches)
    expected = _records_per_batch(batches)
    parts = [read_batch(batches / name, expected_records=expected) for name in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels
