"""Writes a federation's state to disk in a background thread, off the round's critical path.

After every round the round loop hands a :class:`Snapshot` (the history and the
checkpoint's contents, all immutable values) to a :class:`StateWriter` and goes
on. The writer's thread writes ``history.json`` and then the checkpoint, each
atomically (:mod:`orchard.files`), so a kill at any moment leaves a whole
checkpoint and a history that contains at least the checkpoint's round. When
rounds come faster than the disk, a pending snapshot is replaced by the newer
one (coalescing): the files always hold a complete, recent round, and
:meth:`StateWriter.flush` (called when a federation ends or is stopped) writes
the very last one before returning, so the last state is never lost.

``history.json`` is written for every round the writer gets to; a checkpoint
only once ``checkpoint_interval`` seconds have passed since the previous one was
written (0: for every round). A round whose checkpoint is not due yet is kept,
and written when the interval has passed even if no later round comes (a
federation waiting for clients keeps it no longer), unless a newer round
replaces it first. So a kill costs at most the rounds of the last interval,
which a resumed run redoes to the same result.
The checkpoint is most of what a round writes (the whole model, fsynced): in
three runs each of 8 clients of the MNIST CNN (6.65 MB), rounds took 0.117 to
0.123 s with one per round and 0.109 to 0.113 s without any.

``history.png`` is drawn at most every ``plot_interval`` seconds, the first
time ``plot_interval`` after the writer is made, and always on the final
flush, by the process's plot helper (:class:`orchard_server.plot.Plotter`),
from the ``history.json`` just written. Drawing costs matplotlib about 0.1 s
of CPU, more than a whole round of a small model, and its first import
1.7 s, which after round 1 slowed the next rounds several times over
(measured with 2 clients of the MNIST CNN: rounds 2 to 5 took 0.19 to 0.34 s
instead of 0.07 s); in the helper it holds neither the server's GIL nor its
memory. A drawing that fails is logged and does not stop the federation:
``history.json`` and the checkpoint are the record, the PNG a view of it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchard_server.history import HISTORY_FILE, History
from orchard_server.plot import PlotError, shared_plotter

log = logging.getLogger("orchard.server")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything written after one round; ``save_checkpoint`` writes the checkpoint."""

    round: int
    history: History
    save_checkpoint: Callable[[], None]


class StateWriter:
    """One background thread per federation writing its latest :class:`Snapshot`."""

    def __init__(
        self,
        directory: Path,
        *,
        title: str = "",
        plot_interval: float = 5.0,
        checkpoint_interval: float = 0.0,
    ) -> None:
        self.directory = directory
        self.title = title
        self.plot_interval = plot_interval
        self.checkpoint_interval = checkpoint_interval
        self._lock = threading.Condition()
        #: Submitted, its history not written yet.
        self._pending: Snapshot | None = None
        #: Its history written, its checkpoint not yet due.
        self._unsaved: Snapshot | None = None
        self._flushing = 0
        self._busy = False
        self._error: BaseException | None = None
        self._last_plot = time.monotonic()
        self._last_checkpoint = -math.inf
        self._plotted_round = -1
        #: The round whose history was written last (-1: none yet).
        self._latest_round = -1
        self._thread: threading.Thread | None = None
        #: The round of the last checkpoint on disk (-1: none written yet).
        self.written_round = -1

    def submit(self, snapshot: Snapshot) -> None:
        """Queue ``snapshot`` (replacing one not yet started); raises a previous write's error."""
        with self._lock:
            self._raise_error()
            self._pending = snapshot
            # A newer round's checkpoint replaces one not yet due: let go of that
            # round's model now, not when the writer next looks (it may be drawing).
            self._unsaved = None
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"orchard-writer-{self.directory.name}", daemon=True
                )
                self._thread.start()
            self._lock.notify_all()

    def flush(self, *, plot: bool = True) -> None:
        """Block until every submitted snapshot is on disk, its checkpoint included, due or
        not (and, with ``plot``, drawn)."""
        with self._lock:
            self._flushing += 1
            self._lock.notify_all()
            try:
                while self._pending is not None or self._unsaved is not None or self._busy:
                    self._lock.wait()
            finally:
                self._flushing -= 1
            self._raise_error()
            latest = self._latest_round
        if plot and latest >= 0 and self._plotted_round != latest:
            self._plot(latest)

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"writing the state in {self.directory} failed: {error}") from error

    def _next(self) -> tuple[Snapshot, bool, bool] | None:
        """The next write, waiting for it: (snapshot, write its history, write its
        checkpoint); None after 30 s with nothing to write. Called with the lock held."""
        while True:
            due_at = self._last_checkpoint + self.checkpoint_interval
            due = self._flushing > 0 or time.monotonic() >= due_at
            if self._pending is not None:
                snapshot, self._pending = self._pending, None
                self._unsaved = None  # a newer round's checkpoint replaces it
                return snapshot, True, due
            if self._unsaved is not None:
                if due:
                    snapshot, self._unsaved = self._unsaved, None
                    return snapshot, False, True
                self._lock.wait(due_at - time.monotonic())
            elif not self._lock.wait(timeout=30.0) and self._pending is None:
                return None

    def _run(self) -> None:
        while True:
            with self._lock:
                job = self._next()
                if job is None:
                    self._thread = None  # idle: a later submit starts a new thread
                    return
                self._busy = True
            rnd = job[0].round
            try:
                draw = self._write(*job)
                # Only the round's number from here on. A snapshot holds its round's
                # model, and drawing waits for the plot helper, seconds at times (its
                # first matplotlib import), while the next rounds run: holding the
                # snapshot meanwhile kept one more model in the server's memory at
                # the peak of those rounds (docs/performance.md, item 18).
                del job
                if draw:
                    self._plot(rnd)
            except BaseException as exc:  # reported to the round loop on its next submit/flush
                log.exception("writing the state of round %d failed", rnd)
                with self._lock:
                    self._error = exc
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _write(self, snapshot: Snapshot, history: bool, checkpoint: bool) -> bool:
        """Write ``snapshot``'s history and checkpoint as asked; True when a drawing is due.

        A checkpoint not written now stays as ``_unsaved`` (until due, or replaced).
        """
        draw = False
        if history:
            # history.json first: whoever sees the checkpoint of round N also finds
            # round N in the history. A kill in between only means the resumed run
            # redoes round N (and any after it) and rewrites their records.
            snapshot.history.save(self.directory, plot=False)
            self._latest_round = snapshot.round
            draw = time.monotonic() - self._last_plot >= self.plot_interval
        if checkpoint:
            try:
                snapshot.save_checkpoint()
            finally:  # the interval runs from the end of a write: idle in between
                self._last_checkpoint = time.monotonic()
            self.written_round = snapshot.round
        else:
            with self._lock:
                self._unsaved = snapshot
        return draw

    def _plot(self, rnd: int) -> None:
        """Draw ``history.png`` from ``history.json``, already on disk with round ``rnd``."""
        png = self.directory / "history.png"
        try:
            shared_plotter().draw(self.directory / HISTORY_FILE, png, title=self.title)
        except PlotError as exc:
            log.error("round %d: %s not drawn: %s", rnd, png, exc)
        self._last_plot = time.monotonic()
        self._plotted_round = rnd
