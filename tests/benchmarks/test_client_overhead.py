"""The client-overhead benchmark's harness: how it reads both sides and what it reports.

Not timed: speed is a benchmark (``make bench``), never a test. The end-to-end
case runs the real centralized script on generated files; the federation's
side is read from a history shaped as the server writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import client_overhead
from orchard.data.synth import write_synthetic


def _history(rounds: list[tuple[float, float, float]]) -> dict[str, Any]:
    """A one-client history: per round (train rate, fit rate, fit phase seconds); the fit's
    CPU rate is 1.25 times its wall-clock rate."""
    return {
        "rounds": [
            {
                "round": i + 1,
                "fit": {
                    "duration_s": seconds,
                    "participants": [
                        {
                            "num_examples": 900,
                            "metrics": {
                                "train_examples_per_second": train,
                                "fit_examples_per_second": fit,
                                "fit_cpu_examples_per_second": fit * 1.25,
                            },
                        }
                    ],
                },
            }
            for i, (train, fit, seconds) in enumerate(rounds)
        ]
    }


def test_round_rates_read_the_clients_metrics_and_the_servers_fit_phase() -> None:
    rates = client_overhead.round_rates(_history([(1000.0, 900.0, 1.2), (1000.0, 1000.0, 1.0)]))
    assert rates == [
        {"train": 1000.0, "fit": 900.0, "fit_cpu": 1125.0, "round": 750.0, "examples": 900},
        {"train": 1000.0, "fit": 1000.0, "fit_cpu": 1250.0, "round": 900.0, "examples": 900},
    ]


def test_the_line_compares_medians_and_pairs_each_round_with_its_own_loop() -> None:
    samples = client_overhead._Samples()
    samples.add_centralized(
        [
            {
                "examples": 900,
                "examples_per_second": rate,
                "cpu_examples_per_second": 1250.0,
                "threads": 1,
            }
            for rate in (1000.0, 2000.0, 1000.0)
        ]
    )
    samples.add_federated(1, client_overhead.round_rates(_history([(1000.0, 950.0, 1.0)] * 3)))
    line = samples.line(1)
    assert line["train_examples"] == 900
    assert line["threads"] == {"centralized": [1], "client": [1]}
    assert line["centralized_examples_per_second"] == 1000.0
    assert line["client_fit_examples_per_second"] == 950.0
    assert line["overhead_pct"] == 5.0
    assert line["train_loop_overhead_pct"] == 0.0
    assert line["round_overhead_pct"] == 10.0  # 900 examples in 1 s
    assert line["centralized_cpu_examples_per_second"] == 1250.0
    assert line["client_fit_cpu_examples_per_second"] == 1187.5
    assert line["cpu_overhead_pct"] == 5.0
    assert line["fit_vs_loop_pct"] == 5.0
    assert line["round_vs_loop_pct"] == 10.0
    assert line["target_pct"] == client_overhead.TARGET_PCT == 5.0
    assert line["centralized_all"] == [1000.0, 2000.0, 1000.0]


def test_sides_that_trained_on_different_counts_are_refused() -> None:
    samples = client_overhead._Samples()
    samples.add_centralized(
        [
            {
                "examples": 1000,
                "examples_per_second": 1.0,
                "cpu_examples_per_second": 1.0,
                "threads": 1,
            }
        ]
    )
    samples.add_federated(1, client_overhead.round_rates(_history([(1.0, 1.0, 1.0)])))
    with pytest.raises(RuntimeError, match=r"different example counts: \[900, 1000\]"):
        samples.line(1)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--client-rounds=3", "at least 4"),
        ("--client-threads=0", "--client-threads must be at least 1"),
        ("--client-examples=99", "--client-examples must be at least 100"),
    ],
)
def test_bad_options_are_named(option: str, message: str, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    client_overhead.add_arguments(parser)
    args = parser.parse_args([option])
    with pytest.raises(SystemExit, match=message):
        next(client_overhead.run(args, tmp_path))


def test_the_centralized_half_prints_one_line_per_epoch(tmp_path: Path) -> None:
    write_synthetic(tmp_path, "cifar10", n_train=100, n_test=10)
    env = {**os.environ, **client_overhead.thread_env(1)}
    argv = [sys.executable, "-m", "benchmarks.client_overhead", "--data-dir", str(tmp_path)]
    done = subprocess.run(
        [*argv, "--epochs", "2"], check=True, capture_output=True, text=True, env=env
    )
    lines = client_overhead.epoch_lines(done.stdout)
    assert [line["centralized_epoch"] for line in lines] == [1, 2]
    # 100 generated images, 10% held out for validation as the client holds them out.
    assert {(line["examples"], line["threads"]) for line in lines} == {(90, 1)}
    assert all(line["examples_per_second"] > 0 for line in lines)
    assert all(line["cpu_examples_per_second"] > 0 for line in lines)
    assert json.loads(done.stdout.splitlines()[-1]) == lines[-1]
