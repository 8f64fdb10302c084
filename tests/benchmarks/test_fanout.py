"""The fan-out benchmark: what it measures and reports (not timed: speed is a benchmark)."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks import fanout


def test_one_line_per_client_count_every_client_answered(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    fanout.add_arguments(parser)
    args = parser.parse_args(["--fanout-clients", "3,40", "--fanout-spread", "0.05"])
    lines = list(fanout.run(args, tmp_path))
    assert [line["clients"] for line in lines] == [3, 40]
    for line in lines:
        assert line["answered"] == line["clients"]
        assert line["cpu_s"] > 0
        # Every answer waited for its client's delay, and the last came within the spread.
        assert 0 < line["wall_s"] < 5
