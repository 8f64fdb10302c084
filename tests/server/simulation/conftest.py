"""Shared builders for the simulation tests."""

from __future__ import annotations

from typing import Any

from orchard.spec import TensorSpec
from orchard_server.config import FederationConfig

PROBE = "tests.server.simulation.clients:probe_client"


def small_federation(**overrides: Any) -> FederationConfig:
    """A federation of a tiny inline model, 4 clients all sampled each round."""
    options: dict[str, Any] = {
        "name": "sim",
        "tensors": (TensorSpec("w", (3, 2)), TensorSpec("b", (2,))),
        "num_rounds": 2,
        "seed": 7,
        "min_fit_clients": 4,
        "min_available_clients": 4,
        "min_evaluate_clients": 1,
        "fraction_evaluate": 0.5,
        "round_timeout": 30.0,
        "wait_timeout": 5.0,
    }
    options.update(overrides)
    return FederationConfig(**options)
