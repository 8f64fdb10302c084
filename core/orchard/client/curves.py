"""A client's own training curves in TensorBoard (``--tensorboard-dir``).

Each epoch of each fit becomes one step of ``train/loss``, ``train/accuracy``
and ``train/examples_per_second`` under ``DIR/<federation>/clients/<name>``,
beside the server's curves of the same federation (its ``tensorboard_dir``
writes ``DIR/<federation>``), so one ``tensorboard --logdir DIR`` shows both.
tensorboardX is an optional dependency of the clients
(``pip install orchard-core[tensorboard]``); it needs no ML framework.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from orchard.client.training import ConfigError, EpochStats

__all__ = ["EpochCurves"]


class EpochCurves:
    """Writes one client's epochs as TensorBoard scalars (an ``on_epoch`` callback).

    Writes synchronously (tensorboardX's ``EventsWriter``), flushed per
    epoch: a client process may end at any moment, and no epoch is lost
    in a queue.
    """

    def __init__(self, directory: Path, *, federation: str, client: str) -> None:
        try:
            from tensorboardX.event_file_writer import EventsWriter
        except ImportError:
            raise ConfigError(
                "--tensorboard-dir needs tensorboardX (pip install tensorboardX)"
            ) from None
        self.directory = directory / federation / "clients" / client
        self.directory.mkdir(parents=True, exist_ok=True)
        self._writer: Any = EventsWriter(str(self.directory / "events"))
        self._step = 0

    def __call__(self, stats: EpochStats) -> None:
        """Record one epoch (steps count epochs across every fit of this client)."""
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        self._step += 1
        for tag, value in (
            ("train/loss", stats.loss),
            ("train/accuracy", stats.accuracy),
            ("train/examples_per_second", stats.examples_per_second),
        ):
            event = Event(wall_time=time.time(), step=self._step, summary=scalar(tag, value))
            self._writer.write_event(event)
        self._writer.flush()
