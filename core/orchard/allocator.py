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

Only glibc has ``mallopt`` and ``malloc_trim``; elsewhere (musl, macOS) both
functions do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools

#: ``M_TRIM_THRESHOLD`` and ``M_MMAP_THRESHOLD`` from glibc's ``malloc.h``.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
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


def tune_allocator() -> bool:
    """Apply the thresholds above; True when glibc accepted both."""
    libc = _libc()
    if libc is None:
        return False
    with contextlib.suppress(AttributeError):
        mallopt = libc.mallopt
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        mallopt.restype = ctypes.c_int
        return bool(
            mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
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
