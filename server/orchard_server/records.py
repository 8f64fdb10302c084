"""Typed round records: what happened in one round, as frozen dataclasses.

Each record kind is built in one place (its ``of`` constructor) from what the
round loop saw, so every round's record has the same shape whoever produced
it, and readers use attributes, not string keys. Numbers that are not finite
(a diverged client's loss) are kept as None, which is how ``history.json``
(:mod:`.history`, documented in ``docs/history.md``) writes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from orchard.messages import Result
from orchard.typing import Scalar
from orchard_server.pool import ClientInfo
from orchard_server.strategy import weighted_average_metrics

#: A metric value in the history; ``None`` stands for a non-finite number.
HistoryValue: TypeAlias = bool | int | float | str | None
HistoryMetrics: TypeAlias = Mapping[str, HistoryValue]
#: The weight of a result's example count in averages (the federation's
#: :meth:`.ResultPolicy.weight`).
Weight: TypeAlias = Callable[[int], int]


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


def _same(num_examples: int) -> int:
    return num_examples


def _weighted_loss(
    results: Sequence[tuple[ClientInfo, Result]], weight: Weight = _same
) -> float | None:
    """The clients' losses averaged with ``weight(num_examples)`` as weights.

    Losses that are missing or not finite are left out, as
    :func:`.weighted_average_metrics` leaves out such metrics: one diverged
    client should not turn the round's loss into NaN. None when no client
    with examples reported a usable loss. Computed as a convex combination
    (each weight divided by the total first), so finite losses near the
    float range never overflow to infinity.
    """
    pairs = [
        (weight(r.num_examples), loss)
        for _, r in results
        if (loss := finite(r.loss)) is not None and r.num_examples > 0
    ]
    total = sum(w for w, _ in pairs)
    if not total:
        return None
    return finite(math.fsum(w / total * loss for w, loss in pairs))


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
        weight: Weight = _same,
    ) -> FitRecord:
        """The record of a fit phase whose last attempt gave ``results``.

        Averages weigh each client by ``weight(num_examples)``.
        """
        metrics = history_metrics(
            weighted_average_metrics(
                [
                    (
                        weight(r.num_examples),
                        {k: v for k, v in r.metrics.items() if k != "train_loss"},
                    )
                    for _, r in results
                ]
            )
        )
        train_loss = _weighted_loss(results, weight)
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
        weight: Weight = _same,
    ) -> EvaluateRecord:
        """The record of an evaluation phase that gave ``results`` (maybe none).

        Averages weigh each client by ``weight(num_examples)``.
        """
        return cls(
            loss=_weighted_loss(results, weight),
            metrics=history_metrics(
                weighted_average_metrics([(weight(r.num_examples), r.metrics) for _, r in results])
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
