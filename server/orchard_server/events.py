"""What a federation is doing, as a stream of events: the one source of observability.

The round loop and the client pool publish events (a round started, a phase
started or ended with its duration, a client was dropped or its update
rejected with the reason, bytes moved, a round completed with its record, the
federation ended). The web view, the Prometheus metrics, the TensorBoard
writer and the structured logs are :class:`Observer` subscribers of the same
:class:`Events`, so they cannot disagree, and the round loop knows none of
them.

An observer that raises is logged and unsubscribed from nothing: the next
event reaches it again, and the round goes on. Observability must never end
a federation.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchard.messages import FederationState, TaskProgress

if TYPE_CHECKING:  # records imports the pool, which imports this module
    from orchard_server.records import RoundRecord

log = logging.getLogger("orchard.server")

__all__ = [
    "DropKind",
    "Events",
    "FederationView",
    "Observer",
    "Phase",
    "PhaseTiming",
    "drop_kind",
]


class Phase(enum.Enum):
    """The phases of a round, in the order they run."""

    WAITING = "waiting"  # for min_available_clients to connect
    SAMPLING = "sampling"  # the selection policy picks the round's clients
    TRAINING = "training"  # sending tasks, clients training, receiving updates
    AGGREGATING = "aggregating"  # the server optimizer step on the aggregate
    EVALUATING = "evaluating"  # federated and centralized evaluation
    CHECKPOINTING = "checkpointing"  # history.json and the checkpoint on disk


class Stage(enum.Enum):
    """The stages of one client's task inside the TRAINING phase, timed per client.

    A round's TRAINING phase overlaps many clients; each client's task goes
    through these three in turn, so their durations say whether a slow round
    waited on the network (sending, receiving) or on the clients' training.
    """

    SENDING = "sending"  # the task's header and chunks written to the client
    WAITING_FOR_TRAINING = "waiting_for_training"  # last chunk sent .. result header received
    RECEIVING = "receiving"  # the result's chunks read from the client


class DropKind(enum.Enum):
    """Why a client gave no usable result, coarse enough to be a metric label."""

    DEADLINE = "deadline"
    DISCONNECTED = "disconnected"
    CLIENT_ERROR = "client_error"
    REJECTED = "rejected"
    OTHER = "other"


def drop_kind(reason: str) -> DropKind:
    """Classify a drop reason as written by the pool and fan-out."""
    text = reason.lower()
    if "rejected" in text:
        return DropKind.REJECTED
    if "deadline" in text:
        return DropKind.DEADLINE
    if "heartbeat" in text or "disconnected" in text or "left" in text or "joined again" in text:
        return DropKind.DISCONNECTED
    if "failed on the client" in text:
        return DropKind.CLIENT_ERROR
    return DropKind.OTHER


class Observer:
    """A subscriber to a federation's events; every method does nothing by default.

    Subclasses override what they need. Methods run on the event loop, so
    they must be quick (queue slow work, such as disk writes, elsewhere).
    """

    def round_started(self, federation: str, rnd: int, num_rounds: int) -> None:
        """Round ``rnd`` of ``num_rounds`` began (once, however often its fit is retried)."""

    def phase_started(self, federation: str, rnd: int, phase: Phase) -> None:
        """``phase`` of round ``rnd`` began."""

    def phase_ended(self, federation: str, rnd: int, phase: Phase, seconds: float) -> None:
        """``phase`` of round ``rnd`` ended after ``seconds``."""

    def client_dropped(
        self, federation: str, rnd: int, client: str, kind: DropKind, reason: str
    ) -> None:
        """``client`` gave no usable result in round ``rnd`` (``kind`` REJECTED: bad update)."""

    def transferred(self, federation: str, *, sent: int = 0, received: int = 0) -> None:
        """Parameter bytes sent to or received from clients."""

    def client_stage(
        self, federation: str, rnd: int, client_id: str, stage: Stage, seconds: float
    ) -> None:
        """One client's task in round ``rnd`` spent ``seconds`` in ``stage``."""

    def progress(self, federation: str, client_id: str, progress: TaskProgress) -> None:
        """A client reported how far its current task is."""

    def round_completed(self, federation: str, record: RoundRecord) -> None:
        """Round ``record.round`` is done and on disk."""

    def federation_ended(self, federation: str, state: FederationState, reason: str) -> None:
        """The federation finished or failed."""


class Events(Observer):
    """A federation's event stream: forwards each event to every subscriber."""

    def __init__(self) -> None:
        self._observers: list[Observer] = []

    def subscribe(self, observer: Observer) -> None:
        """Deliver every later event to ``observer`` too."""
        self._observers.append(observer)

    def _each(self, method: str, *args: object, **kwargs: object) -> None:
        for observer in self._observers:
            try:
                getattr(observer, method)(*args, **kwargs)
            except Exception:  # an observer's bug must not end a round
                log.exception("observer %s failed on %s", type(observer).__name__, method)

    @contextlib.contextmanager
    def phase(self, federation: str, rnd: int, phase: Phase) -> Iterator[None]:
        """Publish the start and end (with its duration) of a phase around a block."""
        started = time.monotonic()
        self.phase_started(federation, rnd, phase)
        try:
            yield
        finally:
            self.phase_ended(federation, rnd, phase, time.monotonic() - started)

    def round_started(self, federation: str, rnd: int, num_rounds: int) -> None:
        self._each("round_started", federation, rnd, num_rounds)

    def phase_started(self, federation: str, rnd: int, phase: Phase) -> None:
        self._each("phase_started", federation, rnd, phase)

    def phase_ended(self, federation: str, rnd: int, phase: Phase, seconds: float) -> None:
        self._each("phase_ended", federation, rnd, phase, seconds)

    def client_dropped(
        self, federation: str, rnd: int, client: str, kind: DropKind, reason: str
    ) -> None:
        self._each("client_dropped", federation, rnd, client, kind, reason)

    def transferred(self, federation: str, *, sent: int = 0, received: int = 0) -> None:
        self._each("transferred", federation, sent=sent, received=received)

    def client_stage(
        self, federation: str, rnd: int, client_id: str, stage: Stage, seconds: float
    ) -> None:
        self._each("client_stage", federation, rnd, client_id, stage, seconds)

    def progress(self, federation: str, client_id: str, progress: TaskProgress) -> None:
        self._each("progress", federation, client_id, progress)

    def round_completed(self, federation: str, record: RoundRecord) -> None:
        self._each("round_completed", federation, record)

    def federation_ended(self, federation: str, state: FederationState, reason: str) -> None:
        self._each("federation_ended", federation, state, reason)


@dataclass(slots=True)
class PhaseTiming:
    """One phase of one round in the timeline (``seconds`` None while it runs)."""

    phase: Phase
    started: float  # wall-clock (time.time()) for display
    seconds: float | None = None


@dataclass(slots=True)
class _RoundView:
    round: int
    phases: list[PhaseTiming] = field(default_factory=list)
    dropped: list[tuple[str, str, str]] = field(default_factory=list)  # client, kind, reason
    duration_s: float | None = None


class FederationView(Observer):
    """The live state of a federation, kept from its events, for the web view and status.

    Holds the round timeline (phases and durations), drops and rejections with
    reasons, the loss and accuracy curves and each client's latest progress;
    :meth:`snapshot` returns it as plain JSON-ready data.
    """

    #: Rounds kept in the timeline (the curves keep every round).
    TIMELINE_ROUNDS = 50

    def __init__(self) -> None:
        self.round = 0
        self.phase: Phase | None = None
        self._rounds: dict[int, _RoundView] = {}
        self.curves: list[dict[str, float | int | None]] = []
        self.progress_of: dict[str, TaskProgress] = {}

    def _round(self, rnd: int) -> _RoundView:
        view = self._rounds.get(rnd)
        if view is None:
            view = self._rounds[rnd] = _RoundView(round=rnd)
            for old in sorted(self._rounds)[: -self.TIMELINE_ROUNDS]:
                del self._rounds[old]
        return view

    def round_started(self, federation: str, rnd: int, num_rounds: int) -> None:
        self.round = rnd
        self._round(rnd)
        self.progress_of.clear()

    def phase_started(self, federation: str, rnd: int, phase: Phase) -> None:
        self.phase = phase
        self._round(rnd).phases.append(PhaseTiming(phase=phase, started=time.time()))

    def phase_ended(self, federation: str, rnd: int, phase: Phase, seconds: float) -> None:
        for timing in reversed(self._round(rnd).phases):
            if timing.phase is phase and timing.seconds is None:
                timing.seconds = seconds
                break
        if self.phase is phase:
            self.phase = None

    def client_dropped(
        self, federation: str, rnd: int, client: str, kind: DropKind, reason: str
    ) -> None:
        self._round(rnd).dropped.append((client, kind.value, reason))

    def progress(self, federation: str, client_id: str, progress: TaskProgress) -> None:
        self.progress_of[client_id] = progress

    def round_completed(self, federation: str, record: RoundRecord) -> None:
        self._round(record.round).duration_s = record.duration_s
        self.curves.append(curve_point(record))
        self.progress_of.clear()

    def load_history(self, records: list[RoundRecord]) -> None:
        """Start the curves from rounds done before a restart."""
        self.curves = [curve_point(r) for r in records]

    def snapshot(self) -> dict[str, object]:
        """The timeline, drops and curves as JSON-ready data (progress: :attr:`progress_of`)."""
        return {
            "round": self.round,
            "phase": self.phase.value if self.phase else None,
            "timeline": [
                {
                    "round": r.round,
                    "duration_s": r.duration_s,
                    "phases": [
                        {"phase": p.phase.value, "started": p.started, "seconds": p.seconds}
                        for p in r.phases
                    ],
                    "dropped": [{"client": c, "kind": k, "reason": why} for c, k, why in r.dropped],
                }
                for r in sorted(self._rounds.values(), key=lambda r: r.round)
            ],
            "curves": list(self.curves),
        }


def _accuracy(metrics: Mapping[str, object]) -> float | None:
    for key in ("accuracy", "acc", "val_accuracy"):
        value = metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def curve_point(record: RoundRecord) -> dict[str, float | int | None]:
    """One round's point on the loss and accuracy charts (None where not measured)."""
    train = record.fit.metrics.get("train_loss")
    evaluate, central = record.evaluate, record.centralized
    return {
        "round": record.round,
        "train_loss": float(train) if isinstance(train, int | float) else None,
        "distributed_loss": evaluate.loss if evaluate else None,
        "distributed_accuracy": _accuracy(evaluate.metrics) if evaluate else None,
        "centralized_loss": central.loss if central else None,
        "centralized_accuracy": _accuracy(central.metrics) if central else None,
        "duration_s": record.duration_s,
    }
