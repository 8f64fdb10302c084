"""Keep glibc's allocator from handing megabyte buffers back to the kernel after each use.

Every chunk message Orchard sends or receives is a fresh ``bytes`` object of
about a megabyte (and gRPC's own slices are as large). glibc serves blocks of
that size with a private ``mmap`` and unmaps them on ``free``, so every chunk of
every round touches brand-new pages: measured here, encoding a 44.8 MB model
took 100 ms instead of 12 ms, almost all of it page faults. Raising the mmap
threshold to its maximum (32 MiB on 64-bit) serves such blocks from the heap,
and raising the trim threshold keeps freed heap memory for the next chunk.
The trim threshold must exceed what one model's chunks free at once: at 32 MiB,
freeing a 44.8 MB model's chunks gave the top of the heap back to the kernel
and encoding paid the page faults again (21 ms instead of 5 ms, measured with
``python -m benchmarks --suite serde``). Peak memory is unchanged: freed blocks
are reused, not added to; the process just keeps up to 256 MiB of them mapped.

The other side of keeping freed memory: what a round freed stays resident
until the heap reuses it. :func:`release_free_memory` hands free heap pages
back to the kernel (glibc's ``malloc_trim``, which also returns free pages in
the middle of the heap, not only at its top). The server calls it once a
round's encoded model is gone, for models of 32 MiB and more
(:mod:`orchard_server.grpc_pool`): the next encoding then pays its page faults
again (about 16 ms for 44.8 MB), and the server's memory while the updates
arrive no longer holds a model's worth of freed chunks (measured in
``docs/performance.md``). Smaller models keep their pages for the next round.

The server also keeps to one malloc arena (``tune_allocator(arenas=1)``).
glibc gives every thread that allocates an arena of its own, up to eight per
core, and each arena keeps the memory freed in it for its own next
allocations: gRPC's threads receiving megabyte messages, the thread that
encodes the round's model and those that fold large updates each held a
model's worth of freed blocks that no other thread could reuse. Measured
with ``python -m benchmarks --suite rounds --round-cases 11.2m:8,11.2m:32``
(``docs/performance.md``, item 13): the server's peak fell from baseline
+ 8.0 to + 8.5 models to + 5.1 to + 5.7, at the same round times. A
``MALLOC_ARENA_MAX`` set in the environment is the operator's choice and is
left as it is. Clients keep glibc's arenas: a training framework's threads
allocate concurrently, and their speed was not measured with one arena.

Only glibc has ``mallopt`` and ``malloc_trim``; elsewhere (musl, macOS) both
functions do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os

#: ``M_TRIM_THRESHOLD``, ``M_MMAP_THRESHOLD`` and ``M_ARENA_MAX`` from glibc's ``malloc.h``.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
#: glibc's largest mmap threshold on 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``).
MMAP_THRESHOLD = 32 << 20
#: Free heap memory above this is returned to the kernel (a large model's chunks stay below).
TRIM_THRESHOLD = 256 << 20


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, found once (``find_library`` runs ``ldconfig``)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def tune_allocator(*, arenas: int | None = None) -> bool:
    """Apply the thresholds above; True when glibc accepted every setting.

    ``arenas``: at most this many malloc arenas (the server passes 1, see the
    module docstring), unless ``MALLOC_ARENA_MAX`` is set in the environment.
    Call it before the process starts threads: a thread that has allocated
    keeps the arena it has.
    """
    if arenas is not None and arenas < 1:
        raise ValueError(f"arenas must be >= 1, got {arenas}")
    libc = _libc()
    if libc is None:
        return False
    with contextlib.suppress(AttributeError):
        mallopt = libc.mallopt
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        mallopt.restype = ctypes.c_int
        accepted = bool(
            mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
        if arenas is not None and "MALLOC_ARENA_MAX" not in os.environ:
            accepted = bool(mallopt(_M_ARENA_MAX, arenas)) and accepted
        return accepted
    return False


def release_free_memory() -> bool:
    """Return the heap's free pages to the kernel; True when glibc did (it had some).

    Takes a few milliseconds for a few hundred megabytes of free heap, and
    releases the GIL meanwhile (a ``ctypes`` call).
    """
    libc = _libc()
    if libc is None:
        return False
    try:
        trim = libc.malloc_trim
    except AttributeError:
        return False
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return bool(trim(0))
