"""Crash-safe file writes, shared by the server's checkpoints and the data cache.

A file is written to a hidden temporary name in its own directory, flushed and
fsynced, then renamed over the target (atomic on POSIX), and the directory is
fsynced so the rename itself survives a power cut. A reader therefore sees
the old file or the new one, never half of either; on any error the temporary
file is removed and the old file is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_directory(directory: Path) -> None:
    """Persist a rename; best effort, since some platforms cannot open directories."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(
    path: Path, write: Callable[[BinaryIO], object], *, mode: int | None = None
) -> None:
    """Replace ``path`` with what ``write`` writes to the file object it is given.

    ``write`` may raise to abandon the new content (a failed checksum, say):
    the exception propagates and ``path`` keeps its old content. ``mode`` sets
    the permissions of the new file (temporary files are private by default).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            tmp.chmod(mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
