"""A local worker's partial sums: its clients' updates folded where they were trained.

FedAvg's aggregate (McMahan et al. 2017, "Communication-Efficient Learning
of Deep Networks from Decentralized Data") is a weighted sum divided by the
total weight, so it can be summed in parts, as hierarchical FL sums at the
edge (Liu, Zhang, Song and Letaief 2020, "Client-Edge-Cloud Hierarchical
Federated Learning"). The result is the same FedAvg; only where its sum
is computed changes: each worker adds the updates of its own virtual
clients to float64 sums of its own, and the driver adds one partial per
worker at the end of the fan-out instead of one update per client. The
driver folded every update itself before: 1.35 ms each on a 2-core VM, 135
ms of every 0.3 s round of 100 null MNIST CNN clients, on the one process
every job passes through (docs/simulation.md). The workers now do that work
in parallel, and no update's arrays reach the driver.

A worker never folds on its own authority: it holds a client's result until
the driver has checked it (:class:`~orchard_server.results.ResultPolicy`,
the round still open) and says, with the next frame it sends, whether to
fold it and with what factor, or to drop it. So a partial holds exactly the
updates the driver accepted, in the order it said so.

The sums live in a segment the driver made (:mod:`orchard.simulation.shm`),
one per worker, reused from round to round: a 64-byte header of
little-endian ``uint64`` (the fan-out the sums belong to, how many folds
they hold, and a flag set while a fold is under way), then one float64 array
per tensor. The driver reads the header even when the worker has died
(its deadline passed mid-job, or it crashed): a partial of the right
fan-out with no fold under way holds exactly its first ``folds`` accepted
updates, and one caught mid-fold holds none reliably.

Arithmetic is :mod:`orchard.folding`'s, the server's own: plain sums while
every update weighs the same (the weight is then the partial's shared
weight), weighted sums from the first update with another weight on, as
:class:`~orchard_server.strategy.aggregate.WeightedMean` does.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from orchard.folding import add_cast, add_weighted
from orchard.simulation.shm import ALIGN, capacity, pack, views
from orchard.typing import NDArray

__all__ = ["HEADER_BYTES", "PartialSums", "partial_bytes"]

#: The header before the sums: sink, folds, busy (uint64 each), then padding to ALIGN.
HEADER_BYTES = ALIGN
_SINK, _FOLDS, _BUSY = 0, 1, 2


def _float64(shapes: Sequence[Sequence[int]]) -> list[tuple[Sequence[int], str]]:
    return [(shape, "float64") for shape in shapes]


def partial_bytes(shapes: Sequence[Sequence[int]]) -> int:
    """Bytes a partial-sums segment needs for tensors of these shapes."""
    return HEADER_BYTES + capacity(_float64(shapes))


class PartialSums:
    """Float64 sums of one worker's accepted updates, over a shared mapping.

    The worker folds (:meth:`fold`); the driver reads (:attr:`sink`,
    :attr:`folds`, :attr:`busy`, :attr:`sums`) once the worker has answered or
    died, never while it folds.
    """

    def __init__(self, mapping: mmap.mmap, shapes: Sequence[Sequence[int]]) -> None:
        raw = np.frombuffer(mapping, dtype=np.uint8)
        need = partial_bytes(shapes)
        if raw.size < need:
            raise ValueError(f"a partial-sums segment of {raw.size} bytes, {need} needed")
        self._header: npt.NDArray[np.uint64] = raw[:HEADER_BYTES].view("<u8")
        placements, _ = pack(_float64(shapes))
        self.sums: list[npt.NDArray[np.float64]] = views(raw[HEADER_BYTES:], placements)

    @property
    def sink(self) -> int:
        """The fan-out these sums belong to (0: none yet)."""
        return int(self._header[_SINK])

    @property
    def folds(self) -> int:
        """How many updates the sums hold."""
        return int(self._header[_FOLDS])

    @property
    def busy(self) -> bool:
        """Whether a fold was under way (seen after the worker died: the sums are unreliable)."""
        return bool(self._header[_BUSY])

    def fold(
        self, sink: int, arrays: Sequence[NDArray], factor: float, scale_first: float | None
    ) -> None:
        """Add ``factor * arrays`` to the sums of fan-out ``sink`` (a new one starts from zero).

        ``scale_first``: multiply the sums by it before (the first update of
        another weight turns plain sums into weighted ones).
        """
        if len(arrays) != len(self.sums):
            raise ValueError(f"{len(arrays)} arrays for partial sums of {len(self.sums)} tensors")
        for running, array in zip(self.sums, arrays, strict=True):
            if tuple(array.shape) != running.shape:
                raise ValueError(
                    f"an array of shape {list(array.shape)} for sums of {list(running.shape)}"
                )
        if self.sink != sink:
            self._header[_SINK], self._header[_FOLDS] = sink, 0
        first = self.folds == 0
        self._header[_BUSY] = 1
        if scale_first is not None and not first:
            for running in self.sums:
                np.multiply(running, scale_first, out=running)
        for running, array in zip(self.sums, arrays, strict=True):
            if first and factor == 1.0:
                np.copyto(running, array, casting="unsafe")
            elif first:
                np.multiply(array, factor, out=running, dtype=np.float64, casting="unsafe")
            elif factor == 1.0:
                add_cast(running, array)
            else:
                add_weighted(running, array, factor)
        self._header[_FOLDS] += 1
        self._header[_BUSY] = 0

    def describe(self) -> dict[str, Any]:
        """The header, for logs and errors."""
        return {"sink": self.sink, "folds": self.folds, "busy": self.busy}
