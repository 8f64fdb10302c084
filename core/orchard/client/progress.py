"""How far a client's current task is, shared between the training thread and heartbeats.

The runtime hands a :class:`ProgressBoard` to the client it builds (in its
:class:`~orchard.client.numpy_client.ClientContext`); training posts to it
(:class:`~orchard.client.adapter.AdapterClient` after every epoch) and the
heartbeat thread sends the latest value with each heartbeat, so the server's
web view shows per-client progress within a round.
"""

from __future__ import annotations

import threading

from orchard.client.training import EpochStats
from orchard.messages import TaskProgress

__all__ = ["ProgressBoard"]


class ProgressBoard:
    """The latest progress of the task in flight (None between tasks); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: TaskProgress | None = None

    def post(self, progress: TaskProgress) -> None:
        """Replace the current progress."""
        with self._lock:
            self._current = progress

    def post_epoch(self, stats: EpochStats) -> None:
        """Progress after an epoch ended (an ``on_epoch`` callback)."""
        self.post(
            TaskProgress(
                fraction=stats.epoch / stats.epochs,
                epoch=stats.epoch,
                examples_per_second=stats.examples_per_second,
            )
        )

    def clear(self) -> None:
        """No task in flight any more."""
        with self._lock:
            self._current = None

    def current(self) -> TaskProgress | None:
        """The latest progress, or None."""
        with self._lock:
            return self._current
