"""Peak memory of incremental FedAvg over many clients, in models.

:class:`~orchard_server.strategy.WeightedMean` folds each update into a float64
running sum, so its peak should stay near 3 models (the float64 sums and the
update being added) however many clients report; the naive list-of-updates
approach grows with the number of clients.
"""

from __future__ import annotations

import argparse
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from orchard_server.strategy import WeightedMean

NAME = "aggregation"


def measure(parameters: int, clients: int) -> dict[str, Any]:
    """Peak traced memory of folding ``clients`` updates, incremental vs stored."""
    rng = np.random.default_rng(1)
    model_bytes = parameters * 4

    tracemalloc.start()
    agg = WeightedMean()
    for i in range(clients):
        update = [rng.standard_normal(parameters, dtype=np.float32)]  # as if just received
        agg.add(update, 100 + i)
        del update
    agg.result()
    _, incremental_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    tracemalloc.start()
    stored = [rng.standard_normal(parameters, dtype=np.float32) for _ in range(clients)]
    weights = np.arange(100, 100 + clients, dtype=np.float64)
    np.average(np.stack(stored), axis=0, weights=weights)
    _, naive_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "model_mb": round(model_bytes / 1e6, 1),
        "clients": clients,
        "incremental_peak_in_models": round(incremental_peak / model_bytes, 2),
        "naive_peak_in_models": round(naive_peak / model_bytes, 2),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This suite's options."""
    group = parser.add_argument_group(NAME)
    group.add_argument("--agg-parameters", type=int, default=4_000_000)
    group.add_argument("--agg-clients", type=int, default=16)


def run(args: argparse.Namespace, workdir: Path) -> Iterator[dict[str, Any]]:
    """One line."""
    yield measure(args.agg_parameters, args.agg_clients)
