"""How many client results the server holds at once: slots by count and by bytes.

A result's arrays exist from the moment its upload is assembled until the
round loop has folded them into the aggregate and dropped them. Without a
bound, a round of many clients would hold one model per client; a count
alone (``max_concurrent_uploads``) still lets that many 1 GiB updates in at once.
:class:`UploadBudget` admits an upload while fewer than ``slots`` are held
*and* the bytes held stay within ``buffer_bytes`` (one upload is always
admitted, however large, so no model is too big to train). Waiting uploads
are admitted in arrival order, so a large one is not starved by small ones;
while it waits, its client's stream is simply not read, and gRPC's flow
control pauses the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import deque
from collections.abc import Sequence

import numpy as np

__all__ = ["UploadBudget", "UploadSlot"]


class UploadBudget:
    """At most ``slots`` uploads and ``buffer_bytes`` of their arrays held at once."""

    def __init__(self, slots: int, buffer_bytes: int) -> None:
        if slots < 1:
            raise ValueError(f"upload slots must be >= 1, got {slots}")
        if buffer_bytes < 1:
            raise ValueError(f"upload buffer must be >= 1 byte, got {buffer_bytes}")
        self.slots = slots
        self.buffer_bytes = buffer_bytes
        self.held = 0
        self.held_bytes = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, nbytes: int) -> bool:
        return self.held < self.slots and (
            self.held == 0 or self.held_bytes + nbytes <= self.buffer_bytes
        )

    def _take(self, nbytes: int) -> None:
        self.held += 1
        self.held_bytes += nbytes

    async def acquire(self, nbytes: int) -> UploadSlot:
        """A slot for an upload of ``nbytes``; waits (first come, first served) for room."""
        if not self._waiters and self._fits(nbytes):
            self._take(nbytes)
            return UploadSlot(self, nbytes)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (nbytes, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give_back(nbytes)  # admitted, but the upload was cancelled meanwhile
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                self._admit()  # those behind it may fit now
            raise
        return UploadSlot(self, nbytes)

    def give_back(self, nbytes: int) -> None:
        """An upload of ``nbytes`` is done with its slot; admit whoever fits now."""
        self.held -= 1
        self.held_bytes -= nbytes
        self._admit()

    def _admit(self) -> None:
        while self._waiters:
            nbytes, waiter = self._waiters[0]
            if waiter.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            if not self._fits(nbytes):
                return
            self._waiters.popleft()
            self._take(nbytes)
            waiter.set_result(None)


class UploadSlot:
    """One admitted upload, held until the arrays of its result are freed.

    Releasing the slot when the bytes are read is not enough: a delivered
    result waits, with its model-sized arrays, until the round loop folds it
    into the aggregate, and with many clients those results pile up (measured:
    eight models at once with eight clients). Held until the arrays are garbage
    (the aggregator folds them and drops them; aggregators never keep the
    arrays they are given), the slots bound the models in the server's memory,
    however many clients report.
    """

    def __init__(self, budget: UploadBudget, nbytes: int) -> None:
        self._budget = budget
        self._nbytes = nbytes
        self._loop = asyncio.get_running_loop()
        self._alive = 0
        self._released = False

    def hold_while_alive(self, arrays: Sequence[np.ndarray]) -> None:
        """Keep the slot until every one of ``arrays`` is freed."""
        self._alive = len(arrays)
        for array in arrays:
            weakref.finalize(array, self._freed_from_any_thread)

    def release_unless_held(self) -> None:
        """Release now unless delivered arrays hold the slot."""
        if self._alive == 0:
            self._release()

    def _freed_from_any_thread(self) -> None:
        # The last reference may die in the aggregator's worker thread.
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.call_soon_threadsafe(self._freed)

    def _freed(self) -> None:
        self._alive -= 1
        if self._alive == 0:
            self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._budget.give_back(self._nbytes)
