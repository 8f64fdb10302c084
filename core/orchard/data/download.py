"""Checksummed, atomic downloads of dataset files into a local cache.

Dataset hosts move and mirrors go stale, so every file Orchard downloads is
pinned by a published checksum and verified *before* it becomes visible in the
cache: a cache file either is complete and verified, or does not exist. A kill
at any moment leaves at most a hidden ``.part`` file behind, never a truncated
file under the real name.

The download base can be replaced without code changes (the ``mirror``
argument, or the ``ORCHARD_DATASET_MIRROR`` environment variable), and a file
placed by hand at the cache path is used as is once its checksum matches, so
machines without internet access can be provisioned by copying files.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from orchard.files import atomic_write

__all__ = [
    "MIRROR_ENV_VAR",
    "Checksum",
    "DownloadError",
    "Resource",
    "compute_digest",
    "default_data_dir",
    "fetch",
    "resolve_url",
]

logger = logging.getLogger(__name__)

#: Environment variable whose value replaces the base URL of every download.
MIRROR_ENV_VAR = "ORCHARD_DATASET_MIRROR"

#: Environment variable naming the default dataset cache directory.
DATA_DIR_ENV_VAR = "ORCHARD_DATA_DIR"

#: Hash algorithms accepted in checksums, with the length of their hex digest.
_DIGEST_HEX_LENGTHS: dict[str, int] = {"md5": 32, "sha256": 64}

_CHUNK_SIZE = 1 << 20
#: Files at least this large get progress lines while they download.
_PROGRESS_MIN_BYTES = 8 << 20
#: Progress is logged every this many bytes when the server sends no length.
_PROGRESS_UNKNOWN_STEP = 16 << 20


class DownloadError(OSError):
    """A dataset file could not be fetched or verified; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class Checksum:
    """An ``algorithm:hexdigest`` pair, e.g. ``md5:f68b3c2dcbeaaa9fbdd348bbdeb94873``.

    Published dataset checksums are MD5 (torchvision, the CIFAR site) or SHA-256
    (newer registries), so both are accepted, always spelled with the algorithm
    so a digest is never compared against the wrong hash.
    """

    algorithm: str
    hexdigest: str

    def __post_init__(self) -> None:
        expected_length = _DIGEST_HEX_LENGTHS.get(self.algorithm)
        if expected_length is None:
            raise ValueError(
                f"checksum algorithm {self.algorithm!r} is not supported "
                f"(supported: {', '.join(_DIGEST_HEX_LENGTHS)})"
            )
        digest = self.hexdigest
        if len(digest) != expected_length or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(
                f"checksum {self.algorithm}:{digest!r} is not {expected_length} lowercase "
                "hexadecimal digits"
            )

    @classmethod
    def parse(cls, text: str) -> Checksum:
        """Parse ``"md5:..."`` or ``"sha256:..."`` (hex digits in either case)."""
        algorithm, sep, digest = text.partition(":")
        if not sep:
            raise ValueError(
                f"checksum {text!r} must be written 'algorithm:hexdigest', "
                "e.g. 'md5:f68b3c2dcbeaaa9fbdd348bbdeb94873'"
            )
        return cls(algorithm.strip().lower(), digest.strip().lower())

    def matches_file(self, path: Path) -> bool:
        """Whether the file at ``path`` has this digest."""
        return compute_digest(path, self.algorithm) == self.hexdigest

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


@dataclass(frozen=True, slots=True)
class Resource:
    """One downloadable file: its cache file name, its URL and its published checksum.

    ``checksum`` is an ``algorithm:hexdigest`` string (see :class:`Checksum`).
    """

    filename: str
    url: str
    checksum: str

    def __post_init__(self) -> None:
        name = self.filename
        if not name or name in {".", ".."} or "/" in name or "\\" in name or "\0" in name:
            raise ValueError(
                f"resource filename {name!r} must be a plain file name (no directories)"
            )
        if "://" not in self.url:
            raise ValueError(f"resource {name!r}: url {self.url!r} has no scheme")
        Checksum.parse(self.checksum)

    @property
    def parsed_checksum(self) -> Checksum:
        """The checksum as a :class:`Checksum`."""
        return Checksum.parse(self.checksum)


def compute_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks so large files need little memory."""
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK_SIZE):
            hasher.update(chunk)
    return hasher.hexdigest()


def default_data_dir() -> Path:
    """Where datasets are cached when the caller names no directory.

    ``$ORCHARD_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/orchard/datasets``
    (``~/.cache/orchard/datasets``), following the XDG convention so caches can
    be wiped without touching anything else.
    """
    explicit = os.environ.get(DATA_DIR_ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "orchard" / "datasets"


def resolve_url(resource: Resource, mirror: str | None = None) -> str:
    """The URL to download ``resource`` from: the mirror's (argument, then env var) or its own."""
    base = mirror if mirror is not None else os.environ.get(MIRROR_ENV_VAR)
    if base:
        return f"{base.rstrip('/')}/{resource.filename}"
    return resource.url


def _override_hint(cache_path: Path, stale: str = "") -> str:
    """How to get past a failed download; ``stale`` describes a bad file already cached."""
    prefix = f"the file already at {cache_path} has the wrong checksum {stale}; " if stale else ""
    return (
        f"{prefix}to fix: set {MIRROR_ENV_VAR} (or pass mirror=...) to a base URL that serves "
        f"this file, or place the file manually at {cache_path}"
    )


def fetch(
    resource: Resource,
    cache_dir: Path | str,
    *,
    mirror: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Return the path of ``resource`` in ``cache_dir``, downloading it if needed.

    A cached file is reused only if its checksum matches; a mismatching one is
    downloaded again (and the mismatch logged). A download streams into a
    hidden temporary file in ``cache_dir``, is fsynced, and is renamed to its
    final name only after its checksum matched, so the cache never holds an
    unverified file under the real name.

    Raises:
        DownloadError: the download failed or the downloaded bytes have the
            wrong checksum. The message names the URL, the cache path, the
            checksum problem, and the two ways to override.
    """
    cache_dir = Path(cache_dir)
    cache_path = cache_dir / resource.filename
    checksum = resource.parsed_checksum
    stale = ""  # the digest of a cached file that failed verification, if any
    if cache_path.is_file():
        actual = compute_digest(cache_path, checksum.algorithm)
        if actual == checksum.hexdigest:
            logger.debug("using cached %s", cache_path)
            return cache_path
        logger.warning(
            "cached %s has %s %s but %s is expected; downloading it again",
            cache_path,
            checksum.algorithm,
            actual,
            checksum.hexdigest,
        )
        stale = f"{checksum.algorithm}:{actual}"

    url = resolve_url(resource, mirror)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"cannot download {url}: cannot create cache directory {cache_dir}: {exc}; "
            + _override_hint(cache_path, stale)
        ) from exc

    logger.info("downloading %s to %s", url, cache_path)

    def download_verified(out: BinaryIO) -> None:
        actual = _download_to(url, out, resource.filename, checksum.algorithm, timeout)
        if actual != checksum.hexdigest:
            raise DownloadError(
                f"checksum mismatch for {url}: expected {checksum}, got "
                f"{checksum.algorithm}:{actual}; nothing was written to {cache_path} "
                f"(the mirror may serve a different or corrupted file); "
                + _override_hint(cache_path, stale)
            )

    try:
        # 0o644: the cache may be shared (temporary files are private).
        atomic_write(cache_path, download_verified, mode=0o644)
    except DownloadError:
        raise
    except urllib.error.HTTPError as exc:
        raise DownloadError(
            f"download of {url} failed: HTTP {exc.code} {exc.reason}; cache path {cache_path}; "
            + _override_hint(cache_path, stale)
        ) from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # URLError: DNS/connection problems; HTTPException: a broken HTTP response;
        # OSError: timeouts, resets, short reads, disk full; ValueError: a malformed
        # URL (for example a mirror without a scheme).
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise DownloadError(
            f"download of {url} failed: {reason}; cache path {cache_path}; "
            + _override_hint(cache_path, stale)
        ) from exc
    logger.info("downloaded and verified %s (%s)", cache_path, checksum)
    return cache_path


def _download_to(url: str, out: BinaryIO, label: str, algorithm: str, timeout: float) -> str:
    """Stream ``url`` into ``out``, logging progress, and return the hex digest of the bytes."""
    hasher = hashlib.new(algorithm)
    request = urllib.request.Request(url, headers={"User-Agent": "orchard-dataset-fetch/1"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length_header = response.headers.get("Content-Length")
        total = int(length_header) if length_header and length_header.isdigit() else None
        show_progress = total is None or total >= _PROGRESS_MIN_BYTES
        step = total // 10 if total else _PROGRESS_UNKNOWN_STEP
        next_report = step
        received = 0
        while chunk := response.read(_CHUNK_SIZE):
            out.write(chunk)
            hasher.update(chunk)
            received += len(chunk)
            if show_progress and step > 0 and received >= next_report:
                if total:
                    logger.info(
                        "%s: %.1f of %.1f MB (%d%%)",
                        label,
                        received / 1e6,
                        total / 1e6,
                        100 * received // total,
                    )
                else:
                    logger.info("%s: %.1f MB so far", label, received / 1e6)
                next_report += step
    if total is not None and received != total:
        raise OSError(f"the connection closed after {received} of {total} bytes")
    return hasher.hexdigest()
