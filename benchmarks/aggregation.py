"""Incremental FedAvg over many clients: peak memory in models, and time per update.

:class:`~orchard_server.strategy.WeightedMean` folds each update into a float64
running sum, so its peak should stay near 3 models (the float64 sums and the
update being added) however many clients report; the naive list-of-updates
approach grows with the number of clients.

The time of a fold is what the server spends per arriving update (on its event
loop for the MNIST CNN, in a worker thread above 16 MiB) and what the
simulation driver spends per virtual client: ``fold_ms_weighted`` with
distinct example counts (real federations: the block-by-block float64 fold),
``fold_ms_equal`` with equal ones (NumPy's buffered cast-and-add), and
``mean_ms`` for the final division. Each update is a different array, as
received ones are: with the default sizes (16 updates of 16 MB) each is read
from memory, not from a cache the previous fold warmed.
"""

from __future__ import annotations

import argparse
import statistics
import time
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


def time_folds(parameters: int, clients: int, repeats: int = 5) -> dict[str, float]:
    """Median milliseconds per ``WeightedMean.add`` (weighted and equal) and per ``result``."""
    rng = np.random.default_rng(2)
    updates = [[rng.standard_normal(parameters, dtype=np.float32)] for _ in range(clients)]
    weighted: list[float] = []
    equal: list[float] = []
    means: list[float] = []
    for _ in range(repeats):
        for samples, weight_of in ((weighted, lambda i: 100 + i), (equal, lambda i: 100)):
            agg = WeightedMean()
            started = time.perf_counter()
            for i, update in enumerate(updates):
                agg.add(update, weight_of(i))
            samples.append((time.perf_counter() - started) / clients * 1e3)
        started = time.perf_counter()
        agg.result()
        means.append((time.perf_counter() - started) * 1e3)
    return {
        "fold_ms_weighted": round(statistics.median(weighted), 3),
        "fold_ms_equal": round(statistics.median(equal), 3),
        "mean_ms": round(statistics.median(means), 3),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This suite's options."""
    group = parser.add_argument_group(NAME)
    group.add_argument("--agg-parameters", type=int, default=4_000_000)
    group.add_argument("--agg-clients", type=int, default=16)


def run(args: argparse.Namespace, workdir: Path) -> Iterator[dict[str, Any]]:
    """One line: memory, then time per fold."""
    yield {
        **measure(args.agg_parameters, args.agg_clients),
        **time_folds(args.agg_parameters, args.agg_clients),
    }
