"""Virtual clients for the simulation tests (workers import them by name).

Each one's ``fit`` result says what the engine did to it: whether it was
fresh (``fits_before``), what state it was handed, which process ran it.
"""

from __future__ import annotations

import os
import time

import numpy as np

from orchard.client.numpy_client import NumPyClient
from orchard.simulation import SimulationContext
from orchard.typing import Config, Metrics, NDArrays


class ProbeClient(NumPyClient):
    """Adds a seeded step to every tensor and reports how it was created."""

    def __init__(self, context: SimulationContext) -> None:
        self.context = context
        self.fits = 0

    def get_parameters(self, config: Config) -> NDArrays:
        return []

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        ctx = self.context
        behaviour = str(ctx.node_config.get(f"partition_{ctx.partition_id}", ""))
        if behaviour == "sleep":
            time.sleep(60)
        if behaviour == "raise":
            raise RuntimeError("this client always fails")
        if behaviour == "exit" and int(config["round"]) == 1:
            os._exit(3)
        metrics: Metrics = {"fits_before": self.fits, "pid": os.getpid()}
        self.fits += 1
        if ctx.state is None:
            metrics["state"] = -1
        else:
            count = ctx.state.arrays.get("count", np.zeros((), dtype=np.int64)) + 1
            ctx.state.arrays["count"] = count
            metrics["state"] = int(count)
        rng = np.random.default_rng([int(config["seed"]), ctx.partition_id])
        new = [
            p + np.asarray(rng.standard_normal(p.shape), dtype=p.dtype) * 0.01 for p in parameters
        ]
        if behaviour == "nan":
            new[-1].reshape(-1)[-1] = np.nan
        return new, 10 + ctx.partition_id, metrics

    def evaluate(self, parameters: NDArrays, config: Config) -> tuple[float, int, Metrics]:
        return float(self.context.partition_id), 1, {"accuracy": 0.5}


def probe_client(context: SimulationContext) -> NumPyClient:
    """The :class:`ProbeClient` of one task."""
    return ProbeClient(context)
