"""The simulation benchmark's arithmetic (the runs themselves are ``make bench``, not tests)."""

from __future__ import annotations

import pytest

from benchmarks.simulation import overhead


def test_overhead_reports_the_round_with_the_median_ratio_and_lists_every_round() -> None:
    # Ideal = client seconds / 2 workers: 4.0, 4.0, 5.0 s; ratios 1.10, 1.02, 1.04.
    got = overhead([(4.4, 8.0), (4.08, 8.0), (5.2, 10.0)], workers=2)
    assert got["measured_rounds"] == 3
    assert got["overhead_pct_per_round"] == [10.0, 2.0, 4.0]
    # The median ratio is the third round's, reported with its own times.
    assert (got["round_s"], got["client_s_sum"], got["ideal_round_s"]) == (5.2, 10.0, 5.0)
    assert got["ratio"] == 1.04 and got["overhead_pct"] == 4.0


def test_overhead_needs_a_measured_round() -> None:
    with pytest.raises(ValueError, match="no measured round"):
        overhead([], workers=2)
