"""Short histories for the writer and plot tests (one trainer, a falling loss), and
the rounds a federation's ``history.json`` holds on disk."""

from __future__ import annotations

import time
from pathlib import Path

from orchard_server.history import HISTORY_FILE, History, HistoryError
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


def rounds_on_disk(directory: Path) -> int:
    """How many rounds ``directory``'s ``history.json`` holds; 0 while there is none.

    The writer replaces the file atomically, so a file that exists is whole.
    """
    path = directory / HISTORY_FILE
    try:
        return len(History.load(path).rounds)
    except HistoryError:
        if path.exists():
            raise
        return 0


def wait_for_rounds(directory: Path, rounds: int, timeout: float = 10.0) -> int:
    """Wait until ``directory``'s history holds ``rounds`` rounds; how many it holds then."""
    deadline = time.monotonic() + timeout
    while (done := rounds_on_disk(directory)) < rounds:
        assert time.monotonic() < deadline, f"no history of round {rounds} in {timeout:g} s"
        time.sleep(0.01)
    return done
