"""Crash-safe files: checkpoints and history survive a kill at any moment.

Every file is written to a temporary name in the same directory, flushed and
fsynced, then renamed over the old one (atomic on POSIX), and the directory is
fsynced so the rename itself is durable.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Replace ``path`` atomically with what ``write`` writes to the file it is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_json(path: Path, value: Any) -> None:
    """Replace ``path`` with ``value`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


def atomic_write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Replace ``path`` with an uncompressed ``.npz`` of ``arrays``, streamed to disk
    (no in-memory copy of a model-sized archive)."""
    atomic_write(path, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]
