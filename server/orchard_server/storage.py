"""Crash-safe files: checkpoints and history survive a kill at any moment.

Thin wrappers over :func:`orchard.files.atomic_write` for the formats the
server writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def atomic_write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Replace ``path`` with an uncompressed ``.npz`` of ``arrays``, streamed to disk
    (no in-memory copy of a model-sized archive)."""
    atomic_write(path, lambda fh: np.savez(fh, **arrays), mode=FILE_MODE)  # type: ignore[arg-type]
