"""Atomic writes: the old content survives any failure, no temporary file is left."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import pytest

from orchard.files import atomic_write


def test_replaces_content_and_sets_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.bin"
    atomic_write(target, lambda fh: fh.write(b"one"))
    atomic_write(target, lambda fh: fh.write(b"two"), mode=0o644)
    assert target.read_bytes() == b"two"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_a_failing_writer_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def half_then_fail(fh: BinaryIO) -> None:
        fh.write(b"new but incomplete")
        raise ValueError("checksum mismatch")

    with pytest.raises(ValueError, match="checksum mismatch"):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]
