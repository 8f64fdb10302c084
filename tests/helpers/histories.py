"""Short histories for the writer and plot tests: one trainer, a falling loss."""

from __future__ import annotations

from orchard_server.history import History
from orchard_server.records import FitRecord, RoundRecord


def short_history(rounds: int) -> History:
    """``rounds`` rounds of federation ``f``, each with a train loss and accuracy."""
    fit = FitRecord(
        selected=1,
        participants=(),
        dropped={},
        num_examples=1,
        metrics={"train_loss": 1.0 / rounds, "train_accuracy": 0.5},
        attempts=1,
        duration_s=0.1,
    )
    return History(
        federation="f",
        rounds=[
            RoundRecord(round=r, fit=fit, evaluate=None, centralized=None, duration_s=0.1)
            for r in range(1, rounds + 1)
        ],
    )
