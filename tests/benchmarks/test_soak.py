"""The soak benchmark, short: 50 sessions, 5 rounds, a tenth disrupted every round.

``make bench`` runs the full soak (200 sessions, 20 rounds). Here the same
checks on a smaller run: every round completes, each result the server
acknowledged is aggregated exactly once (the echo updates encode who
counted), the aggregate matches the history, and the server's memory holds
still between the last two rounds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.soak import Ledger, SoakSettings, _audit, run_soak

pytestmark = pytest.mark.slow


def test_a_short_soak_under_churn_loses_and_doubles_nothing(tmp_path: Path) -> None:
    report = run_soak(SoakSettings(clients=50, rounds=5, churn=0.1, seed=3), tmp_path)
    # What decides "ok", first: pytest shortens a long dict to its first keys.
    checks = [
        "server_exit",
        "rounds_completed",
        "lost",
        "counted_twice_or_wrong",
        "rounds_not_matching_history",
        "rss_growth",
        "server_rss_mb",
    ]
    assert report["ok"], {key: report[key] for key in checks}
    assert report["rounds_completed"] == 5 and report["server_exit"] == 0
    assert report["leaves"] + report["crashes"] == 5 * 5
    assert report["lost"] == report["counted_twice_or_wrong"] == 0
    assert report["results_counted"] >= report["results_acknowledged"] > 5 * 25


def test_the_audit_catches_a_lost_and_a_doubled_result() -> None:
    """The checks can fail: a result acknowledged but missing, or counted twice."""
    ledger = Ledger()
    ledger.start = {1: np.zeros(4)}
    ledger.acked[1] = {0, 1, 2}
    participants = [{"partition": p} for p in (0, 1)]
    history = {"rounds": [{"round": 1, "fit": {"participants": participants}}]}
    # Partitions 0 and 1 counted once each (1/2); partition 2 acknowledged but lost.
    audit = _audit(ledger, np.array([0.5, 0.5, 0.0, 0.0]), history)
    assert audit["lost"] == 1 and audit["counted_twice_or_wrong"] == 0
    # Partition 1 counted twice: 2/3 where 1/2 (one count each of 2) was due.
    doubled = _audit(ledger, np.array([1 / 3, 2 / 3, 0.0, 0.0]), history)
    assert doubled["counted_twice_or_wrong"] == 2
