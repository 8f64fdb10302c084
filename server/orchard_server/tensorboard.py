"""Every federation's history as TensorBoard scalars, written by tensorboardX.

A :class:`TensorBoardWriter` subscribes to a federation's events and writes,
per completed round, the train, distributed and centralized loss and
metrics, the round's duration and each phase's, into ``DIR/<federation>``, so
``tensorboard --logdir DIR`` shows every federation's curves side by side
(clients write their per-epoch curves under ``DIR/<federation>/clients/``
with ``--tensorboard-dir``). tensorboardX needs no ML framework, but imports
torch when it can (to accept tensors): the server imports it with torch
hidden, and only when ``tensorboard_dir`` is set, so it never loads torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from orchard.messages import FederationState
from orchard_server.events import Observer, Phase
from orchard_server.records import RoundRecord

__all__ = ["TensorBoardWriter"]


def _summary_writer() -> Any:
    """tensorboardX's ``SummaryWriter`` class, imported without letting it import torch."""
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # type: ignore[assignment]  # "import torch" now fails
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide:
            del sys.modules["torch"]
    return SummaryWriter


class TensorBoardWriter(Observer):
    """Writes one federation's rounds as scalars (step = round)."""

    def __init__(self, directory: Path, federation: str) -> None:
        self.directory = directory / federation
        self._writer = _summary_writer()(logdir=str(self.directory), flush_secs=5)
        self._round = 0

    def round_started(self, federation: str, rnd: int, num_rounds: int) -> None:
        self._round = rnd

    def phase_ended(self, federation: str, rnd: int, phase: Phase, seconds: float) -> None:
        self._writer.add_scalar(f"phase_seconds/{phase.value}", seconds, rnd)

    def round_completed(self, federation: str, record: RoundRecord) -> None:
        step, add = record.round, self._writer.add_scalar
        for key, value in record.fit.metrics.items():
            if isinstance(value, int | float):
                add(f"fit/{key}", value, step)
        if record.evaluate is not None:
            if record.evaluate.loss is not None:
                add("distributed/loss", record.evaluate.loss, step)
            for key, value in record.evaluate.metrics.items():
                if isinstance(value, int | float):
                    add(f"distributed/{key}", value, step)
        if record.centralized is not None:
            if record.centralized.loss is not None:
                add("centralized/loss", record.centralized.loss, step)
            for key, value in record.centralized.metrics.items():
                if isinstance(value, int | float):
                    add(f"centralized/{key}", value, step)
        add("round/duration_seconds", record.duration_s, step)
        add("round/clients_answered", len(record.fit.participants), step)
        add("round/clients_dropped", len(record.fit.dropped), step)
        self._writer.flush()

    def federation_ended(self, federation: str, state: FederationState, reason: str) -> None:
        self._writer.add_text("federation/end", f"{state.value}: {reason}", self._round)
        self.close()

    def close(self) -> None:
        """Write what is queued and close the file (again: nothing happens)."""
        self._writer.close()
