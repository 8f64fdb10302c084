"""The in-process logreg federation the server's unit tests run."""

from __future__ import annotations

from typing import Any

from orchard.examples.logreg import logreg_spec
from orchard_server.config import FederationConfig


def logreg_config(**overrides: Any) -> FederationConfig:
    """Three rounds of logreg on two clients, short timeouts, no retries; ``overrides`` win."""
    base: dict[str, Any] = {
        "name": "blobs",
        "model": "logreg",
        "tensors": logreg_spec().tensors,
        "num_rounds": 3,
        "seed": 3,
        "min_fit_clients": 2,
        "min_evaluate_clients": 2,
        "min_available_clients": 2,
        "round_timeout": 30.0,
        "wait_timeout": 1.0,
        "round_retries": 0,
        "fit_config": {"epochs": 1, "batch_size": 16, "learning_rate": 0.1},
    }
    return FederationConfig(**(base | overrides))
