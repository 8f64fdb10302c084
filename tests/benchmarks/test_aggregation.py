"""The aggregation benchmark: what it measures and reports (not timed: speed is a benchmark)."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks import aggregation


def test_one_line_with_memory_in_models_and_time_per_fold(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    aggregation.add_arguments(parser)
    args = parser.parse_args(["--agg-parameters", "100000", "--agg-clients", "6"])
    (line,) = aggregation.run(args, tmp_path)
    assert line["model_mb"] == 0.4
    assert line["clients"] == 6
    # Folding keeps the float64 sums and one update; storing keeps all six.
    assert line["incremental_peak_in_models"] < 4
    assert line["naive_peak_in_models"] >= 6
    for key in ("fold_ms_weighted", "fold_ms_equal", "mean_ms"):
        assert line[key] > 0, key
