"""Crash-safe files: checkpoints and history survive a kill at any moment.

Thin wrappers over :func:`orchard.files.atomic_write` for the formats the
server writes.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from orchard.files import atomic_write

#: Run outputs are results to share, not secrets: readable by every user, so
#: a copy taken out of a container (``docker compose cp``) opens anywhere.
FILE_MODE = 0o644


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    atomic_write(path, lambda fh: fh.write(data), mode=FILE_MODE)


def atomic_write_json(path: Path, value: Any) -> None:
    """Replace ``path`` with ``value`` as indented, strict JSON.

    NaN and infinities are refused (``ValueError``) rather than written as the
    non-JSON ``NaN``/``Infinity`` that strict parsers reject: callers encode
    them first (the history writes ``null``).
    """
    atomic_write_bytes(path, (json.dumps(value, indent=2, allow_nan=False) + "\n").encode())


#: Bytes of an array handed to the archive per write: a slice of the array's own memory.
_WRITE_BYTES = 1 << 20


def atomic_write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Replace ``path`` with an uncompressed ``.npz`` of ``arrays`` (what ``np.load`` reads),
    streamed to disk straight from the arrays' memory.

    Not ``np.savez``: into an archive member it writes each array through
    ``tobytes`` of 16 MiB blocks, a copy of every byte and a 16 MiB temporary
    while the server holds a round's updates (the checkpoint is written in the
    background during the next round).
    """
    atomic_write(path, lambda fh: _write_npz(fh, arrays), mode=FILE_MODE)


def _write_npz(fh: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise ValueError(f"array {name!r} holds Python objects, which np.load refuses")
            if not array.flags.c_contiguous:
                array = np.ascontiguousarray(array)
            with archive.open(f"{name}.npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(
                    member, np.lib.format.header_data_from_array_1_0(array)
                )
                data = array.reshape(-1).data.cast("B")
                for start in range(0, len(data), _WRITE_BYTES):
                    member.write(data[start : start + _WRITE_BYTES])
