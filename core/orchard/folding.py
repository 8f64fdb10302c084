"""Folding one update into float64 sums: the arithmetic of FedAvg's running mean.

The server's :class:`~orchard_server.strategy.aggregate.WeightedMean` folds
each update into float64 sums as it arrives, and a local simulation worker
folds the updates of its own virtual clients into partial sums the same way
(:mod:`orchard.simulation.partial`), so both live here, in core: the same
values whichever process adds them. NumPy only, present in 1.23 and 2.x (an
MXNet worker folds too).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from orchard.typing import NDArray

__all__ = ["CAST_BUFFER", "CAST_BUFFER_FROM", "FLOAT64_BLOCK", "add_cast", "add_weighted"]

#: Elements per step of the block-by-block float64 arithmetic (here, in the
#: aggregates and in the server's optimizers): a block's float64 temporary and
#: sums (256 KiB each) and its float32 update (128 KiB) stay in a core's cache
#: whatever the model size. A weighted fold took 2.3 ms per MNIST CNN update
#: and 22 ms per 11.2M-value one, against 3.3 and 28 ms with blocks of 2 MB,
#: which spilled a 2 MiB L2 cache (docs/performance.md, item 14).
FLOAT64_BLOCK = 1 << 15

#: Elements in NumPy's casting buffer while the equal-weight fold adds a float32
#: update to the float64 sums (NumPy's default is 8,192; this is 2 MiB of buffer
#: during the call). Timed alone on a 2-core AMD EPYC VM: 0.59 against 1.0 ms for
#: 1,663,370 values in one tensor (2**17: 0.85 ms, 2**19: 0.64 ms) and 4.6 against
#: 7.9 ms for 11.2M; 200K values take 0.06 ms with any size (docs/performance.md,
#: item 15).
CAST_BUFFER = 1 << 18
#: Tensors of fewer values keep NumPy's default buffer: the large one would be a
#: float64 copy of a small tensor (twice its float32 bytes), for no gain at 200K.
#: From this size on the buffer is at most half a tensor's bytes.
CAST_BUFFER_FROM = 4 * CAST_BUFFER


def add_weighted(running: npt.NDArray[np.float64], array: NDArray, weight: float) -> None:
    """``running += weight * array`` in float64, one block at a time.

    Doing it in one expression would allocate a float64 copy of the whole
    tensor (twice a float32 model) for every update.
    """
    flat_sum = running.reshape(-1)
    flat = np.ascontiguousarray(array).reshape(-1)
    tmp = np.empty(min(FLOAT64_BLOCK, flat.size), dtype=np.float64)
    for start in range(0, flat.size, FLOAT64_BLOCK):
        stop = min(start + FLOAT64_BLOCK, flat.size)
        block = tmp[: stop - start]
        np.multiply(flat[start:stop], weight, out=block, dtype=np.float64)
        flat_sum[start:stop] += block


def add_cast(running: npt.NDArray[np.float64], array: NDArray) -> None:
    """``running += array`` in float64, a large tensor cast through ``CAST_BUFFER``.

    One ufunc call and no float64 copy of the update: NumPy casts it a buffer
    at a time. The values are the same whatever the buffer's size; only the
    time differs. The size is NumPy's per-thread setting (per context in NumPy
    2), put back however the call ends.
    """
    previous = np.setbufsize(CAST_BUFFER) if array.size >= CAST_BUFFER_FROM else None
    try:
        np.add(running, array, out=running, dtype=np.float64)
    finally:
        if previous is not None:
            np.setbufsize(previous)
