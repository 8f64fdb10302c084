"""Shared memory between a simulation driver and its local workers: models skip the pipes.

Moving a 6.7 MB model through a worker's pipe both ways for every job costs
the driver several copies and hundreds of event-loop wake-ups per job (1.3 GB
per round of 100 clients). Instead:

* **Parameters, once per round.** The driver writes a task's parameters into
  a :class:`Segment` once (:class:`Broadcast`), and every job that carries
  those parameters names the segment. A worker maps it privately
  (copy-on-write) for each job: the client reads the driver's pages without
  a copy, may write into its arrays as into any others, and no write reaches
  the segment or the next client.
* **Results, without a copy on the driver.** Each worker has result segments
  the driver made (:class:`ResultSlots`); the worker writes a result's arrays
  into one and the driver hands the server NumPy views of it. The segment
  goes back to its worker's free list when the last view is dropped (the
  server folds a result and drops its arrays), so memory follows the results
  the server holds, not the number of virtual clients.

A segment is a Linux ``memfd``: an anonymous shared-memory file with no name
in ``/dev/shm``, so there is nothing to unlink and nothing to leak. The kernel
frees it when the last descriptor and mapping to it close: when the driver
closes it and the workers have forgotten it, or when the processes exit,
however they exit (a killed driver leaves nothing behind; its workers see
their pipe close and exit). Nor does it count against a small ``/dev/shm``
(64 MB in a default Docker container). A worker opens the driver's descriptor
as ``/proc/<driver pid>/fd/<n>`` (same user); where that is not possible
(no memfd, no ``/proc``, another user) :func:`probe` says why and the
backend keeps model arrays on the pipe.

Only standard-library and NumPy calls present in NumPy 1.23 and 2.x are used:
the driver and an MXNet worker (NumPy 1.23) share this module.
"""

from __future__ import annotations

import collections
import itertools
import math
import mmap
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchard.typing import NDArray, NDArrays

__all__ = [
    "ALIGN",
    "Broadcast",
    "Placement",
    "ResultSlots",
    "Segment",
    "SegmentError",
    "WorkerSegments",
    "available",
    "capacity",
    "layout_from_json",
    "layout_to_json",
    "pack",
    "plan",
    "probe",
    "set_key",
    "views",
]

#: Every array starts at a multiple of this many bytes (cache lines, SIMD loads).
ALIGN = 64
#: Bytes a probe segment holds: the worker reads them back to prove it can open segments.
_PROBE = b"orchard-simulation-shm-probe"
_NAME = "orchard-sim"


class SegmentError(RuntimeError):
    """A segment cannot be made, opened or read as the frame describes."""


def available() -> str:
    """Empty when this process can make segments, else why not (they need Linux's memfd)."""
    if not hasattr(os, "memfd_create"):
        return "this platform has no memfd_create (shared memory needs Linux)"
    if not os.path.isdir("/proc/self/fd"):
        return "/proc is not mounted"
    return ""


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one array lies in a segment."""

    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def pack(tensors: Iterable[tuple[Sequence[int], Any]]) -> tuple[list[Placement], int]:
    """(shape, dtype) pairs packed in order at aligned offsets, and the bytes needed."""
    placements = []
    offset = 0
    for shape, dtype in tensors:
        place = Placement(np.dtype(dtype), tuple(int(s) for s in shape), offset)
        placements.append(place)
        offset = _aligned(offset + place.nbytes)
    return placements, offset


def plan(arrays: Sequence[NDArray]) -> tuple[list[Placement], int]:
    """The placement of each array, packed in order at aligned offsets, and the bytes needed."""
    return pack((a.shape, a.dtype) for a in arrays)


def capacity(tensors: Sequence[tuple[Sequence[int], str]]) -> int:
    """Bytes a segment needs for arrays of these (shape, dtype) packed by :func:`plan`."""
    return pack(tensors)[1]


def layout_to_json(placements: Sequence[Placement]) -> list[list[Any]]:
    """Placements as JSON: ``[dtype, shape, offset]`` each."""
    return [[p.dtype.str, list(p.shape), p.offset] for p in placements]


def layout_from_json(data: Any, size: int, what: str) -> list[Placement]:
    """Inverse of :func:`layout_to_json`, checked against a segment of ``size`` bytes.

    Raises :class:`SegmentError` naming the entry when an array would lie
    outside the segment, start unaligned, or is not described by
    ``[dtype, shape, offset]``: a view is never made over bytes it does not own.
    """
    if not isinstance(data, list):
        raise SegmentError(f"{what}: the layout is not a list")
    out = []
    for i, entry in enumerate(data):
        try:
            dtype_str, shape, offset = entry
            place = Placement(np.dtype(dtype_str), tuple(int(s) for s in shape), int(offset))
        except (TypeError, ValueError) as exc:
            raise SegmentError(
                f"{what}: array #{i} is not [dtype, shape, offset] ({entry!r}): {exc}"
            ) from None
        if place.dtype.hasobject:
            raise SegmentError(f"{what}: array #{i} has an object dtype")
        if place.offset < 0 or place.offset % ALIGN or any(s < 0 for s in place.shape):
            raise SegmentError(
                f"{what}: array #{i} has a negative size or an offset ({place.offset}) "
                f"that is not a non-negative multiple of {ALIGN}"
            )
        if place.offset + place.nbytes > size:
            raise SegmentError(
                f"{what}: array #{i} ({place.dtype.str} {list(place.shape)}, {place.nbytes} "
                f"bytes at offset {place.offset}) lies beyond the segment's {size} bytes"
            )
        out.append(place)
    return out


def views(raw: NDArray, placements: Sequence[Placement]) -> NDArrays:
    """Arrays over ``raw`` (a 1-D uint8 array over a mapping); every view keeps ``raw`` alive."""
    return [raw[p.offset : p.offset + p.nbytes].view(p.dtype).reshape(p.shape) for p in placements]


def _copy_in(
    mapping: mmap.mmap, placements: Sequence[Placement], arrays: Sequence[NDArray]
) -> None:
    """Copy ``arrays`` into ``mapping`` where ``placements`` (from :func:`plan`) put them."""
    raw = np.frombuffer(mapping, dtype=np.uint8)
    for view, array in zip(views(raw, placements), arrays, strict=True):
        np.copyto(view, array, casting="no")


_ids = itertools.count(1)


class Segment:
    """A driver's shared-memory file of ``size`` bytes, mapped read-write."""

    def __init__(self, size: int, kind: str) -> None:
        self.id = next(_ids)
        self.size = max(size, 1)
        self.name = f"{_NAME}-{os.getpid()}-{kind}-{self.id}"
        try:
            self.fd = os.memfd_create(self.name, os.MFD_CLOEXEC)
        except (AttributeError, OSError) as exc:
            raise SegmentError(f"cannot create a shared-memory segment: {exc}") from None
        try:
            # Reserve the pages now: out of memory is an error here, never a
            # SIGBUS when a process first touches a page.
            os.posix_fallocate(self.fd, 0, self.size)
            self.map = mmap.mmap(self.fd, self.size)
        except OSError as exc:
            os.close(self.fd)
            raise SegmentError(
                f"cannot allocate a {self.size}-byte shared-memory segment: {exc}"
            ) from None
        self.closed = False
        # A segment dropped without close() (its owner is gone) still frees its descriptor.
        self._close_fd = weakref.finalize(self, os.close, self.fd)

    def ref(self) -> dict[str, Any]:
        """How a worker finds this segment (frame header field)."""
        return {"id": self.id, "fd": self.fd, "size": self.size, "name": self.name}

    def write(self, arrays: Sequence[NDArray]) -> list[Placement]:
        """Copy ``arrays`` in (packed by :func:`plan`); returns their placements."""
        placements, need = plan(arrays)
        if need > self.size:
            raise SegmentError(f"{need} bytes do not fit a {self.size}-byte segment")
        _copy_in(self.map, placements, arrays)
        return placements

    def close(self) -> bool:
        """Unmap and close: the kernel frees the memory once no worker maps it.

        False (and still open) while a view of it is alive: the caller retries.
        """
        if self.closed:
            return True
        try:
            self.map.close()
        except BufferError:
            return False
        self.closed = True
        self._close_fd()
        return True


def probe() -> tuple[Segment, dict[str, Any]] | None:
    """A tiny segment a new worker must read back (None: no segments on this platform)."""
    if available():
        return None
    segment = Segment(len(_PROBE), "probe")
    segment.map[: len(_PROBE)] = _PROBE
    return segment, {**segment.ref(), "pid": os.getpid()}


def set_key(arrays: Sequence[NDArray]) -> tuple[int, ...]:
    """The identity of a parameter set: its list and each of its arrays.

    A round's tasks share one list of the same arrays, and the server never
    changes them in place, so identity tells a new set from a seen one; the
    caller keeps the set alive while it caches by this key, so no identity
    is reused meanwhile.
    """
    return (id(arrays), *map(id, arrays))


@dataclass(slots=True)
class _Shared:
    """One parameter set in a segment, and how many jobs in flight refer to it."""

    arrays: Sequence[NDArray]
    segment: Segment
    layout: list[list[Any]]
    users: int = 0


class Broadcast:
    """The driver's parameter sets in shared memory: one segment per distinct set.

    A set is the same list of the same array objects (every task of a round
    shares its list), held here while cached, so its identity is never reused.
    The arrays must not be changed in place while jobs use them: the segment
    is a copy taken at the first job. The ``keep`` most recent sets stay
    cached (a round's tasks share one); older ones close once no job in flight refers to them.
    """

    def __init__(self, keep: int = 1) -> None:
        self.keep = keep
        self._sets: collections.OrderedDict[tuple[int, ...], _Shared] = collections.OrderedDict()

    def acquire(self, arrays: Sequence[NDArray]) -> tuple[tuple[int, ...], dict[str, Any]]:
        """The frame reference of ``arrays`` (written on first use); pair with :meth:`release`."""
        key = set_key(arrays)
        shared = self._sets.get(key)
        if shared is None:
            placements, need = plan(arrays)
            segment = Segment(need, "params")
            try:
                segment.write(arrays)
            except BaseException:
                segment.close()
                raise
            shared = _Shared(arrays, segment, layout_to_json(placements))
            self._sets[key] = shared
        self._sets.move_to_end(key)
        shared.users += 1
        self._evict()
        return key, {**shared.segment.ref(), "layout": shared.layout}

    def release(self, key: tuple[int, ...]) -> None:
        """A job that used ``key`` is over."""
        shared = self._sets.get(key)
        if shared is not None:
            shared.users -= 1
            self._evict()

    def _evict(self) -> None:
        for key in list(self._sets)[: max(0, len(self._sets) - self.keep)]:
            if self._sets[key].users <= 0:
                self._sets.pop(key).segment.close()

    @property
    def segments(self) -> int:
        """Segments open now (tests, accounting)."""
        return len(self._sets)

    def close(self) -> None:
        """Close every segment (jobs still in flight fail: the backend is stopping)."""
        for shared in self._sets.values():
            shared.segment.close()
        self._sets.clear()


class ResultSlots:
    """One worker's result segments on the driver: at most ``limit``, each busy while leased.

    :meth:`lease` wraps a result's arrays as views of its segment; the segment
    is free again when the last view is garbage (a finalizer, which may run on
    any thread, hence the lock), and ``on_free`` is called. When all
    ``limit`` segments are leased (the server has not folded that many of this
    worker's results yet), :meth:`take` gives None: the backend waits for
    ``on_free`` before giving the worker another job, so shared memory stays
    ``limit`` results per worker whatever the number of clients, and a server
    that folds slower than the workers train holds the workers back instead
    of piling results up. (A consumer that keeps results' arrays without
    folding them would stall the worker: the backend then :meth:`grow` s it.)
    """

    def __init__(self, limit: int = 2, on_free: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.on_free = on_free
        self._lock = threading.Lock()
        self._free: list[Segment] = []
        #: Segments this worker owns now: free, out on a job, or leased.
        self._owned = 0
        self._closed = False

    def take(self, size: int) -> Segment | None:
        """A free segment of ``size`` bytes or more, a new one, or None when all are leased."""
        with self._lock:
            for i, segment in enumerate(self._free):
                if segment.size >= size:
                    return self._free.pop(i)
            if self._closed or self._owned >= self.limit:
                return None
            self._owned += 1
        try:
            return Segment(size, "result")
        except BaseException:
            with self._lock:
                self._owned -= 1
            raise

    def give_back(self, segment: Segment) -> None:
        """``segment`` came back unused (the worker answered through the pipe)."""
        with self._lock:
            if self._closed:
                self._owned -= 1
                segment.close()
            else:
                self._free.append(segment)

    def discard(self, segment: Segment) -> None:
        """Close ``segment``: its job failed, and the worker may still write into it."""
        with self._lock:
            self._owned -= 1
        segment.close()

    def lease(self, segment: Segment, placements: Sequence[Placement]) -> NDArrays:
        """Views of ``segment`` holding a result; the segment is busy until they are all gone."""
        raw = np.frombuffer(segment.map, dtype=np.uint8)
        weakref.finalize(raw, self._release, segment)
        return views(raw, placements)

    def _release(self, segment: Segment) -> None:
        # Runs while the dying array still maps the segment: a closed pool
        # lets the segment go (its mapping and descriptor are freed with it).
        with self._lock:
            if self._closed:
                self._owned -= 1
                return
            self._free.append(segment)
        if self.on_free is not None:
            self.on_free()

    def grow(self) -> None:
        """Allow one more segment (the server holds results longer than expected)."""
        with self._lock:
            self.limit += 1

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (no segment will be handed out)."""
        return self._closed

    @property
    def exhausted(self) -> bool:
        """Whether every segment is leased (a :meth:`take` now gives None until one is freed)."""
        with self._lock:
            return not self._closed and not self._free and self._owned >= self.limit

    @property
    def segments(self) -> int:
        """Segments this worker owns now (tests, accounting)."""
        with self._lock:
            return self._owned

    def close(self) -> None:
        """Close the free segments now; leased ones go when their views do (the worker is gone)."""
        with self._lock:
            self._closed = True
            free, self._free = self._free, []
            self._owned -= len(free)
        for segment in free:
            segment.close()


class WorkerSegments:
    """A worker's side: opens the driver's segments by descriptor number.

    Parameter segments stay open (the ``keep`` most recent) and are mapped
    privately per job; result segments (a few per worker, see
    :class:`ResultSlots`) and the worker's partial sums stay mapped for the
    worker's life.
    """

    def __init__(self, ref: Mapping[str, Any], keep: int = 2) -> None:
        """Open the driver's probe segment ``ref``; raises :class:`SegmentError` if it cannot."""
        self.pid = int(ref["pid"])
        self.keep = keep
        self._params: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._results: dict[int, mmap.mmap] = {}
        fd = self._open(ref, os.O_RDONLY)
        try:
            with mmap.mmap(fd, int(ref["size"]), prot=mmap.PROT_READ) as m:
                if m[: len(_PROBE)] != _PROBE:
                    raise SegmentError(f"segment {ref['name']} does not hold the probe's bytes")
        finally:
            os.close(fd)

    def _open(self, ref: Mapping[str, Any], flags: int) -> int:
        path = f"/proc/{self.pid}/fd/{int(ref['fd'])}"
        try:
            fd = os.open(path, flags | os.O_CLOEXEC)
        except OSError as exc:
            raise SegmentError(
                f"cannot open the driver's segment {ref['name']} ({path}): {exc}"
            ) from None
        try:
            # The descriptor number must still name this segment, of this size.
            link = os.readlink(path)
            size = os.fstat(fd).st_size
        except OSError as exc:
            os.close(fd)
            raise SegmentError(f"cannot inspect {path}: {exc}") from None
        if f"memfd:{ref['name']} " not in f"{link} " or size != int(ref["size"]):
            os.close(fd)
            raise SegmentError(
                f"{path} is {link!r} of {size} bytes, not the segment {ref['name']} of "
                f"{ref['size']} bytes the frame names"
            )
        return fd

    def params(self, ref: Mapping[str, Any]) -> NDArrays:
        """A job's parameters: writable copy-on-write views of the segment ``ref`` names."""
        sid = int(ref["id"])
        fd = self._params.get(sid)
        if fd is None:
            fd = self._open(ref, os.O_RDONLY)
            self._params[sid] = fd
            while len(self._params) > self.keep:
                os.close(self._params.popitem(last=False)[1])
        self._params.move_to_end(sid)
        size = int(ref["size"])
        placements = layout_from_json(ref.get("layout"), size, f"segment {ref['name']}")
        mapping = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        return views(np.frombuffer(mapping, dtype=np.uint8), placements)

    def write_result(self, ref: Mapping[str, Any], arrays: Sequence[NDArray]) -> list[Any] | None:
        """Copy a result's arrays into the segment ``ref`` names; None when they do not fit."""
        arrays = [np.asarray(a) for a in arrays]
        placements, need = plan(arrays)
        size = int(ref["size"])
        if need > size or any(p.dtype.hasobject for p in placements):
            return None
        _copy_in(self.shared_map(ref), placements, arrays)
        return layout_to_json(placements)

    def shared_map(self, ref: Mapping[str, Any]) -> mmap.mmap:
        """The segment ``ref`` names, mapped shared and writable for this worker's life.

        Result segments and the worker's partial sums (:mod:`orchard.simulation.partial`).
        """
        sid = int(ref["id"])
        mapping = self._results.get(sid)
        if mapping is None:
            fd = self._open(ref, os.O_RDWR)
            try:
                mapping = mmap.mmap(fd, int(ref["size"]))
            finally:
                os.close(fd)
            self._results[sid] = mapping
        return mapping

    def close(self) -> None:
        """Close every descriptor and mapping (a worker's end)."""
        for fd in self._params.values():
            os.close(fd)
        self._params.clear()
        for mapping in self._results.values():
            mapping.close()
        self._results.clear()

    @property
    def open_segments(self) -> int:
        """Segments this worker holds open (tests)."""
        return len(self._params) + len(self._results)
