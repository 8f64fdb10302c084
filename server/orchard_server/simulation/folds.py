"""The driver's side of workers folding their own clients' updates (hierarchical FedAvg).

A local worker keeps a fit result it found sound and tells the driver only
its example count and metrics; the driver checks them as a deployment's pool
would and decides (:class:`FoldRequest`): fold with this weight, or drop. The
decision rides on the next frame the driver sends that worker, which folds
the update into its partial sums (:mod:`orchard.simulation.partial`) before
anything else. At the end of the fan-out the driver settles every worker's
last decision and reads each partial back (:meth:`WorkerFolds.close`); the
server adds them to the round's aggregate.

What the driver writes down here is what it needs to trust a partial: the
decisions sent to each worker, in order, with their weights. A worker that
died (its job's deadline passed, or it crashed) still leaves its partial in
the driver's segment: if its header names this fan-out and no fold was under
way, the sums hold exactly the first ``folds`` updates sent, and the rest are
lost, each named with the reason; a partial caught mid-fold is lost whole.
So is one holding an update the fan-out never collected (its wait was
cancelled at the deadline just after the worker answered): sums cannot be
taken apart again.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from orchard.simulation import shm
from orchard.simulation.job import JobResult
from orchard.simulation.partial import PartialSums, partial_bytes

if TYPE_CHECKING:
    from orchard_server.simulation.backend import _Process

__all__ = ["FoldLog", "FoldRequest", "Partial", "WorkerFolds"]

log = logging.getLogger("orchard.simulation")

_sinks = itertools.count(1)


@dataclass(frozen=True, slots=True)
class FoldRequest:
    """Ask a worker to keep a fit result for its partial sums of fan-out ``folds``."""

    folds: WorkerFolds
    #: The driver's decision on a result the worker kept: its weight in the
    #: aggregate, or None to drop it (the caller knows why).
    decide: Callable[[JobResult], int | None]


@dataclass(slots=True)
class FoldLog:
    """What one worker was told to fold for one fan-out, in order."""

    sink: int
    #: (task id, weight) of every fold decision written to the worker.
    sent: list[tuple[str, int]] = field(default_factory=list)
    #: The decision on the result the worker holds now, not written yet.
    pending: dict[str, Any] | None = None
    pending_weight: int = 0
    #: The weight of the first update: while every update has it, the sums are plain sums.
    shared: int | None = None
    #: The index in ``sent`` of the first weighted fold (None: plain sums so far).
    weighted_from: int | None = None

    def decide(self, task_id: str, weight: int | None) -> None:
        """Record the decision on the result the worker holds (it goes with the next frame)."""
        if weight is None:
            self.pending = {"task_id": task_id, "drop": True}
            return
        scale: float | None = None
        if self.shared is None:
            self.shared, factor = weight, 1.0
        elif self.weighted_from is None and weight == self.shared:
            factor = 1.0
        elif self.weighted_from is None:
            # The first other weight: plain sums become weighted sums, once.
            scale, factor, self.weighted_from = float(self.shared), float(weight), len(self.sent)
        else:
            factor = float(weight)
        self.pending = {"task_id": task_id, "factor": factor, "scale_first": scale}
        self.pending_weight = weight

    def take_pending(self) -> dict[str, Any] | None:
        """The decision to write with the next frame (None: none), counted as sent."""
        decision, self.pending = self.pending, None
        if decision is not None and not decision.get("drop"):
            self.sent.append((decision["task_id"], self.pending_weight))
        return decision

    def drop_pending_unless(self, collected: Collection[str]) -> None:
        """Turn a pending fold the fan-out never collected into a drop."""
        if self.pending is not None and self.pending["task_id"] not in collected:
            self.pending = {"task_id": self.pending["task_id"], "drop": True}


@dataclass(frozen=True, slots=True)
class Partial:
    """One worker's partial sums, read back: what the aggregate adds."""

    sums: list[npt.NDArray[np.float64]]
    #: The updates in the sums, with their weights.
    tasks: list[tuple[str, int]]
    #: The weight every update had when the sums are plain sums; None: weighted sums.
    shared_weight: int | None

    @property
    def total(self) -> int:
        """The updates' total weight."""
        return sum(w for _, w in self.tasks)


class WorkerFolds:
    """One fan-out whose fit results the workers fold: its id and the workers involved."""

    def __init__(self, shapes: list[tuple[int, ...]]) -> None:
        self.sink = next(_sinks)
        self.shapes = shapes
        self.workers: set[_Process] = set()
        self.closed = False

    def new_segment(self) -> shm.Segment:
        """A worker's partial-sums segment (raises :class:`.shm.SegmentError`)."""
        return shm.Segment(partial_bytes(self.shapes), "partial")

    async def close(self, collected: Collection[str]) -> tuple[list[Partial], dict[str, str]]:
        """Settle every worker's last decision; its partial sums, and the updates lost.

        ``collected``: the task ids the fan-out took as folded here. Returns
        the partials (views of the workers' segments: add them, then drop
        them, before the next fan-out) and task id -> why its update is lost.
        """
        self.closed = True
        partials: list[Partial] = []
        lost: dict[str, str] = {}
        for worker in sorted(self.workers, key=lambda w: w.proc.pid):
            log_ = worker.fold_log
            if log_ is None or log_.sink != self.sink:
                continue
            log_.drop_pending_unless(collected)
            how = await worker.settle()
            partial, gone = _read_back(worker.partial, self.shapes, log_, collected, how)
            if partial is not None:
                partials.append(partial)
            lost.update(gone)
            worker.fold_log = None
            if worker.proc.returncode is not None:
                # A dead worker's segment goes with the last view of its sums.
                worker.partial = None
        return partials, lost


def _read_back(
    segment: shm.Segment | None,
    shapes: list[tuple[int, ...]],
    log_: FoldLog,
    collected: Collection[str],
    how: str,
) -> tuple[Partial | None, dict[str, str]]:
    """The partial sums in a worker's ``segment`` for ``log_``'s fan-out, and the updates lost."""
    sent = log_.sent
    if not sent:
        return None, {}
    if segment is None:
        return None, {t: f"its worker ({how}) had no partial sums" for t, _ in sent}
    partial = PartialSums(segment.map, shapes)
    state = partial.describe()
    if partial.sink != log_.sink or partial.busy:
        why = f"its worker ({how}) left its partial sums unfinished ({state})"
        return None, dict.fromkeys((t for t, _ in sent), why)
    folded = sent[: partial.folds]
    uncollected = [t for t, _ in folded if t not in collected]
    if uncollected:
        why = (
            f"its worker's partial sums ({how}) also hold {len(uncollected)} update(s) the "
            "round never took (its wait ended at the deadline as they came)"
        )
        return None, dict.fromkeys((t for t, _ in sent), why)
    lost = {t: f"its worker ({how}) ended before folding it" for t, _ in sent[partial.folds :]}
    if not folded:
        return None, lost
    weighted = log_.weighted_from is not None and len(folded) > log_.weighted_from
    return (
        Partial(partial.sums, folded, None if weighted else log_.shared),
        lost,
    )
