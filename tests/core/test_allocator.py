"""The allocator tuning: glibc accepts both thresholds, and a model's chunks fit under them."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from orchard import serde
from orchard.allocator import MMAP_THRESHOLD, TRIM_THRESHOLD, tune_allocator


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or ctypes.util.find_library("c") is None,
    reason="mallopt is glibc's",
)
def test_glibc_accepts_both_thresholds() -> None:
    assert tune_allocator() is True


def test_chunks_come_from_the_heap_and_a_large_models_chunks_are_kept() -> None:
    # Every chunk is below the mmap threshold (so it is served from the heap),
    # and the 44.8 MB benchmark model's chunks, freed together, stay below the
    # trim threshold (so the heap is not handed back between rounds).
    assert serde.MAX_CHUNK_BYTES < MMAP_THRESHOLD
    assert TRIM_THRESHOLD > 11_200_000 * 4
