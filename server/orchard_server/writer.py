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
    """Everything written after one round; ``save`` writes the checkpoint."""

    round: int
    history: History
    save_checkpoint: Callable[[], None]


class StateWriter:
    """One background thread per federation writing its latest :class:`Snapshot`."""

    def __init__(self, directory: Path, *, title: str = "", plot_interval: float = 5.0) -> None:
        self.directory = directory
        self.title = title
        self.plot_interval = plot_interval
        self._lock = threading.Condition()
        self._pending: Snapshot | None = None
        self._busy = False
        self._error: BaseException | None = None
        self._last_plot = time.monotonic()
        self._plotted_round = -1
        self._latest: Snapshot | None = None
        self._thread: threading.Thread | None = None
        #: The round of the last checkpoint on disk (-1: none written yet).
        self.written_round = -1

    def submit(self, snapshot: Snapshot) -> None:
        """Queue ``snapshot`` (replacing one not yet started); raises a previous write's error."""
        with self._lock:
            self._raise_error()
            self._pending = snapshot
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"orchard-writer-{self.directory.name}", daemon=True
                )
                self._thread.start()
            self._lock.notify_all()

    def flush(self, *, plot: bool = True) -> None:
        """Block until every submitted snapshot is on disk (and, with ``plot``, drawn)."""
        with self._lock:
            while self._pending is not None or self._busy:
                self._lock.wait()
            self._raise_error()
            latest = self._latest
        if plot and latest is not None and self._plotted_round != latest.round:
            self._plot(latest)

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"writing the state in {self.directory} failed: {error}") from error

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._pending is None:
                    if not self._lock.wait(timeout=30.0) and self._pending is None:
                        self._thread = None  # idle: a later submit starts a new thread
                        return
                snapshot, self._pending = self._pending, None
                self._busy = True
            try:
                self._write(snapshot)
            except BaseException as exc:  # reported to the round loop on its next submit/flush
                log.exception("writing the state of round %d failed", snapshot.round)
                with self._lock:
                    self._error = exc
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _write(self, snapshot: Snapshot) -> None:
        # history.json first: whoever sees the checkpoint of round N also finds
        # round N in the history. A kill in between only means the resumed run
        # redoes round N and rewrites its record.
        snapshot.history.save(self.directory, plot=False)
        snapshot.save_checkpoint()
        self.written_round = snapshot.round
        self._latest = snapshot
        if time.monotonic() - self._last_plot >= self.plot_interval:
            self._plot(snapshot)

    def _plot(self, snapshot: Snapshot) -> None:
        """Draw ``history.png`` from the ``history.json`` of ``snapshot``, already on disk."""
        png = self.directory / "history.png"
        try:
            shared_plotter().draw(self.directory / HISTORY_FILE, png, title=self.title)
        except PlotError as exc:
            log.error("round %d: %s not drawn: %s", snapshot.round, png, exc)
        self._last_plot = time.monotonic()
        self._plotted_round = snapshot.round
