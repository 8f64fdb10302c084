"""The round benchmark's harness, and the memory property it measures, at a small scale.

Not timed: speed is a benchmark (``make bench``), never a test. Memory is a
property: the server's peak must not grow with the number of clients.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import rounds


def test_cases_parse_and_bad_ones_are_named() -> None:
    cases = rounds.parse_cases("mnist-cnn:2, 11.2m:8")
    assert [(w.name, n) for w, n in cases] == [("mnist-cnn", 2), ("11.2m", 8)]
    assert cases[0][0].parameters == 1_663_370
    assert rounds.WORKLOADS["1gib"].parameters * 4 == 1 << 30
    with pytest.raises(SystemExit, match="unknown workload 'vgg'"):
        rounds.parse_cases("vgg:2")
    with pytest.raises(SystemExit, match="positive integer"):
        rounds.parse_cases("mnist-cnn:0")


def test_cadence_is_the_time_between_round_ends() -> None:
    history = [{"finished_at": 10.0}, {"finished_at": 10.5}, {"finished_at": 11.25}, {}]
    assert rounds.cadences(history) == [0.5, 0.75]


@pytest.mark.slow
def test_server_peak_memory_does_not_grow_with_the_number_of_clients(tmp_path: Path) -> None:
    """Peak RSS with 16 clients within 1.5x of 2 clients (issue 12), for a 32 MB model.

    Before upload slots were tied to the received arrays, each extra client
    added about 0.6 models, which puts 16 clients near 1.9x here.
    """
    workload = rounds.Workload("w8m", tensors=(("w", 8_000_000),))
    two = rounds.run_case(workload, 2, 3, tmp_path / "two")
    sixteen = rounds.run_case(workload, 16, 3, tmp_path / "sixteen")
    assert two["rounds_measured"] == sixteen["rounds_measured"] == 2
    ratio = sixteen["server_peak_rss_mb"] / two["server_peak_rss_mb"]
    assert ratio <= 1.5, (two, sixteen)
