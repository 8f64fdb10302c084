"""The history of a federation: typed round records, written to ``history.json``.

Each record kind is a frozen dataclass built in one place (its ``of``
constructor) from what the round loop saw, so every round's record has the
same shape whoever produced it. The file layout is documented field by field
in ``docs/history.md``: ``{"schema_version": 1, "federation": ..., "rounds":
[...]}``. It is strict JSON: a non-finite number (a diverged client's loss) is
written as ``null``, because NaN and Infinity are not JSON and other tools
refuse them. Files written before the version existed have the same keys and
are read as version 1.

Written atomically after every round, so a crash never leaves a half-written
file and a resumed federation carries its history on.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from orchard.messages import Result
from orchard.typing import Scalar
from orchard_server.plot import plot_history
from orchard_server.pool import ClientInfo
from orchard_server.storage import atomic_write_json
from orchard_server.strategy import weighted_average_metrics

#: The layout version written at the top of ``history.json``.
SCHEMA_VERSION = 1

#: A metric value in the history; ``None`` stands for a non-finite number.
HistoryValue: TypeAlias = bool | int | float | str | None
HistoryMetrics: TypeAlias = Mapping[str, HistoryValue]


class HistoryError(ValueError):
    """A history document cannot be read; the message names the field at fault."""


def finite(value: float | None) -> float | None:
    """``value`` as a float, or None when it is missing or not finite."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def history_metrics(metrics: Mapping[str, Scalar]) -> dict[str, HistoryValue]:
    """Metrics as the history keeps them: bytes left out, non-finite numbers as None."""
    out: dict[str, HistoryValue] = {}
    for key, value in metrics.items():
        if isinstance(value, bytes):
            continue
        out[key] = finite(value) if isinstance(value, float) else value
    return out


def _weighted_loss(results: Sequence[tuple[ClientInfo, Result]]) -> float | None:
    """The clients' losses averaged with their example counts as weights.

    Losses that are missing or not finite are left out, as
    :func:`.weighted_average_metrics` leaves out such metrics: one diverged
    client should not turn the round's loss into NaN. None when no client
    with examples reported a usable loss.
    """
    total, weight = 0.0, 0
    for _, result in results:
        loss = finite(result.loss)
        if loss is not None and result.num_examples > 0:
            total += loss * result.num_examples
            weight += result.num_examples
    return total / weight if weight else None


def format_metrics(metrics: HistoryMetrics, prefix: str = "") -> str:
    """``", accuracy 0.7100"`` for the float metrics (starting with ``prefix``), for logs."""
    keys = [k for k in metrics if k.startswith(prefix)] if prefix else list(metrics)
    return "".join(f", {k} {v:.4f}" for k in keys if isinstance(v := metrics[k], float))


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientOutcome:
    """What one client did in a phase: who it is, its examples, loss and metrics."""

    #: The client's public name (its display name), as logs show it.
    client: str
    client_id: str
    framework: str
    partition: int
    num_examples: int
    loss: float | None
    metrics: HistoryMetrics

    @classmethod
    def of(cls, info: ClientInfo, result: Result) -> ClientOutcome:
        """The outcome of ``info``'s ``result``."""
        return cls(
            client=info.display_name,
            client_id=info.client_id,
            framework=info.framework,
            partition=info.partition_id,
            num_examples=result.num_examples,
            loss=finite(result.loss),
            metrics=history_metrics(result.metrics),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FitRecord:
    """The training phase of a round (its last attempt's clients, every attempt's drops)."""

    selected: int
    participants: tuple[ClientOutcome, ...]
    #: Client name -> why it gave no usable update (dropped, or rejected by the aggregator).
    dropped: Mapping[str, str]
    num_examples: int
    #: Example-weighted means of the clients' metrics, with their loss as ``train_loss``.
    metrics: HistoryMetrics
    attempts: int
    duration_s: float

    @classmethod
    def of(
        cls,
        results: Sequence[tuple[ClientInfo, Result]],
        *,
        dropped: Mapping[str, str],
        selected: int,
        attempts: int,
        duration: float,
    ) -> FitRecord:
        """The record of a fit phase whose last attempt gave ``results``."""
        metrics = history_metrics(
            weighted_average_metrics(
                [
                    (r.num_examples, {k: v for k, v in r.metrics.items() if k != "train_loss"})
                    for _, r in results
                ]
            )
        )
        train_loss = _weighted_loss(results)
        if train_loss is not None:
            metrics["train_loss"] = train_loss
        return cls(
            selected=selected,
            participants=tuple(ClientOutcome.of(i, r) for i, r in results),
            dropped=dict(dropped),
            num_examples=sum(r.num_examples for _, r in results),
            metrics=dict(sorted(metrics.items())),
            attempts=attempts,
            duration_s=round(duration, 3),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluateRecord:
    """Federated evaluation: the clients' example-weighted loss and metrics."""

    loss: float | None
    metrics: HistoryMetrics
    num_examples: int
    participants: tuple[ClientOutcome, ...]
    dropped: Mapping[str, str]
    duration_s: float

    @classmethod
    def of(
        cls,
        results: Sequence[tuple[ClientInfo, Result]],
        *,
        dropped: Mapping[str, str],
        duration: float,
    ) -> EvaluateRecord:
        """The record of an evaluation phase that gave ``results`` (maybe none)."""
        return cls(
            loss=_weighted_loss(results),
            metrics=history_metrics(
                weighted_average_metrics([(r.num_examples, r.metrics) for _, r in results])
            ),
            num_examples=sum(r.num_examples for _, r in results),
            participants=tuple(ClientOutcome.of(i, r) for i, r in results),
            dropped=dict(dropped),
            duration_s=round(duration, 3),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CentralizedRecord:
    """Centralized evaluation of the new global model, in process or on an evaluator."""

    loss: float | None
    metrics: HistoryMetrics
    #: Examples evaluated; 0 when unknown (an in-process ``evaluate_fn``) or failed.
    num_examples: int
    #: ``"server"`` for an in-process evaluation, else the evaluator client's name.
    source: str
    #: The evaluator and why it gave no result; empty on success.
    dropped: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        source: str,
        loss: float | None,
        metrics: Mapping[str, Scalar],
        *,
        num_examples: int = 0,
        dropped: Mapping[str, str] | None = None,
    ) -> CentralizedRecord:
        """The record of one centralized evaluation by ``source``."""
        return cls(
            loss=finite(loss),
            metrics=history_metrics(metrics),
            num_examples=num_examples,
            source=source,
            dropped=dict(dropped or {}),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundRecord:
    """One completed round."""

    round: int
    fit: FitRecord
    evaluate: EvaluateRecord | None
    centralized: CentralizedRecord | None
    duration_s: float


# --------------------------------------------------------------------------- JSON


def _strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON)."""
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, Mapping):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


class _Reader:
    """Typed access to one JSON object, naming the field path in every error."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise HistoryError(f"{where} must be an object, got {type(data).__name__}")
        self.data, self.where = data, where

    def get(self, key: str, kinds: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise HistoryError(f"{self.where} has no {key!r}")
            return default
        value = self.data[key]
        allowed = kinds if isinstance(kinds, tuple) else (kinds,)
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise HistoryError(f"{self.where}.{key} has the wrong type: {value!r}")
        return value

    def number(self, key: str) -> float | None:
        value = self.get(key, (int, float, type(None)), None)
        return None if value is None else float(value)

    def metrics(self, key: str) -> dict[str, HistoryValue]:
        raw = self.get(key, dict, {})
        for name, value in raw.items():
            if not isinstance(value, bool | int | float | str | None):
                raise HistoryError(f"{self.where}.{key}.{name} is not a scalar: {value!r}")
        return dict(raw)

    def dropped(self) -> dict[str, str]:
        raw = self.get("dropped", dict, {})
        return {str(k): str(v) for k, v in raw.items()}

    def outcomes(self) -> tuple[ClientOutcome, ...]:
        raw = self.get("participants", list, [])
        out = []
        for i, item in enumerate(raw):
            r = _Reader(item, f"{self.where}.participants[{i}]")
            out.append(
                ClientOutcome(
                    client=r.get("client", str),
                    client_id=r.get("client_id", str, ""),
                    framework=r.get("framework", str, ""),
                    partition=r.get("partition", int, -1),
                    num_examples=r.get("num_examples", int),
                    loss=r.number("loss"),
                    metrics=r.metrics("metrics"),
                )
            )
        return tuple(out)


def _round_from_json(data: object, index: int) -> RoundRecord:
    r = _Reader(data, f"rounds[{index}]")
    fit = _Reader(r.get("fit", dict), f"rounds[{index}].fit")
    evaluate = r.get("evaluate", (dict, type(None)), None)
    centralized = r.get("centralized", (dict, type(None)), None)
    ev = None if evaluate is None else _Reader(evaluate, f"rounds[{index}].evaluate")
    ce = None if centralized is None else _Reader(centralized, f"rounds[{index}].centralized")
    return RoundRecord(
        round=r.get("round", int),
        fit=FitRecord(
            selected=fit.get("selected", int),
            participants=fit.outcomes(),
            dropped=fit.dropped(),
            num_examples=fit.get("num_examples", int),
            metrics=fit.metrics("metrics"),
            attempts=fit.get("attempts", int, 1),
            duration_s=fit.number("duration_s") or 0.0,
        ),
        evaluate=None
        if ev is None
        else EvaluateRecord(
            loss=ev.number("loss"),
            metrics=ev.metrics("metrics"),
            num_examples=ev.get("num_examples", int, 0),
            participants=ev.outcomes(),
            dropped=ev.dropped(),
            duration_s=ev.number("duration_s") or 0.0,
        ),
        centralized=None
        if ce is None
        else CentralizedRecord(
            loss=ce.number("loss"),
            metrics=ce.metrics("metrics"),
            num_examples=ce.get("num_examples", int, 0),
            source=ce.get("source", str, ""),
            dropped=ce.dropped(),
        ),
        duration_s=r.number("duration_s") or 0.0,
    )


@dataclass(slots=True)
class History:
    """The rounds of one federation, in round order."""

    federation: str
    rounds: list[RoundRecord] = field(default_factory=list)

    def add_round(self, record: RoundRecord) -> None:
        """Append (or replace, after a resume) the record of one round."""
        self.rounds = [r for r in self.rounds if r.round != record.round]
        self.rounds.append(record)
        self.rounds.sort(key=lambda r: r.round)

    def to_json(self) -> dict[str, Any]:
        """The document written to ``history.json`` (strict JSON; see docs/history.md)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "federation": self.federation,
            "rounds": [_strict(dataclasses.asdict(r)) for r in self.rounds],
        }

    @classmethod
    def from_json(cls, data: object) -> History:
        """Inverse of :meth:`to_json`; a document without a version is read as version 1.

        Raises :class:`HistoryError` naming the field for anything else, and
        for a version newer than this code knows.
        """
        doc = _Reader(data, "history")
        version = doc.get("schema_version", int, SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise HistoryError(
                f"history has schema_version {version}; this Orchard reads version "
                f"{SCHEMA_VERSION} (and unversioned files from before it)"
            )
        rounds = [_round_from_json(r, i) for i, r in enumerate(doc.get("rounds", list, []))]
        return cls(federation=doc.get("federation", str), rounds=rounds)

    @classmethod
    def load(cls, path: Path) -> History:
        """Read a ``history.json``; the error names the file."""
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise HistoryError(f"{path}: {exc}") from None

    def save(self, directory: Path) -> None:
        """Write ``history.json`` and ``history.png`` in ``directory``."""
        atomic_write_json(directory / "history.json", self.to_json())
        plot_history(self, directory / "history.png")
