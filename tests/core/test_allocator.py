"""The allocator tuning: glibc accepts both thresholds, a model's chunks fit under them,
and the server's threads share one arena."""

from __future__ import annotations

import ctypes.util
import os
import platform
import subprocess
import sys

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


_ARENAS_SCRIPT = """
import ctypes, ctypes.util, sys, threading
from orchard.allocator import tune_allocator
arenas = None if sys.argv[1] == "none" else int(sys.argv[1])
assert tune_allocator(arenas=arenas)
barrier = threading.Barrier(4)
def work():
    blocks = [bytearray(200_000) for _ in range(8)]  # malloc'd in this thread
    barrier.wait()  # all four threads alive at once: none inherits a freed arena
ts = [threading.Thread(target=work) for _ in range(4)]
for t in ts: t.start()
for t in ts: t.join()
ctypes.CDLL(ctypes.util.find_library("c")).malloc_stats()  # one "Arena N:" per arena
"""


def _arenas(arg: str, env: dict[str, str]) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _ARENAS_SCRIPT, arg],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or ctypes.util.find_library("c") is None,
    reason="malloc arenas are glibc's",
)
def test_one_arena_serves_every_thread_unless_the_environment_says_otherwise() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    # Without the cap, each of the four allocating threads gets an arena of its
    # own (where its freed chunks stay); with it, they share the main arena.
    assert _arenas("none", env) == 5
    assert _arenas("1", env) == 1
    # An operator's MALLOC_ARENA_MAX wins over the server's choice.
    assert _arenas("1", {**env, "MALLOC_ARENA_MAX": "3"}) == 3


def test_arenas_must_be_positive() -> None:
    with pytest.raises(ValueError, match="arenas must be >= 1, got 0"):
        tune_allocator(arenas=0)
