"""The allocator tuning: glibc accepts both thresholds, and a model's chunks fit under them."""

from __future__ import annotations

import ctypes.util
import os
import platform

import pytest

from orchard import serde
from orchard.allocator import MMAP_THRESHOLD, TRIM_THRESHOLD, release_free_memory, tune_allocator


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


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or ctypes.util.find_library("c") is None,
    reason="malloc_trim is glibc's",
)
def test_freed_chunks_stay_resident_until_released() -> None:
    # With the tuned thresholds, megabyte buffers come from the heap and, once
    # freed, stay mapped (the next encoding reuses them without page faults);
    # release_free_memory hands them back. Every 20th buffer is kept, so the
    # free memory lies between live blocks, not only at the heap's top.
    assert tune_allocator()
    buffers = [b"\x01" * (1 << 20) for _ in range(200)]  # written: resident
    before = _rss_mb()
    kept = buffers[::20]
    del buffers
    freed = _rss_mb()
    assert freed > before - 50, "freed heap memory stays resident until released"
    assert release_free_memory() is True
    assert _rss_mb() < freed - 100, "release_free_memory returned the freed megabytes"
    assert len(kept) == 10
