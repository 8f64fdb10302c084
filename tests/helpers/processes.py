"""Fixtures for tests that run real server and client processes on loopback.

The processes are started by the product launcher (:mod:`orchard.launch`);
each logs to a file under the test's ``tmp_path``, and a failing wait raises
:class:`~orchard.launch.LaunchError` with the log tails, so a red test says
what the processes saw.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from orchard import launch
from orchard.launch import Launcher

__all__ = ["REPO", "fedavg_federation", "launcher", "loopback_server", "write_config"]

REPO = Path(__file__).resolve().parents[2]


def write_config(
    path: Path, *, server: Mapping[str, Any], federations: Mapping[str, Mapping[str, Any]]
) -> Path:
    """A server config file with a ``[server]`` table and one table per federation."""
    return launch.write_config(path, {"server": server, "federations": federations})


def fedavg_federation(
    model: str,
    *,
    clients: int,
    num_rounds: int,
    fit_config: Mapping[str, Any],
    evaluate_config: Mapping[str, Any],
    seed: int = 1,
    round_timeout: float = 120.0,
) -> dict[str, Any]:
    """A FedAvg federation table in which every round waits for all ``clients``."""
    return {
        "model": model,
        "num_rounds": num_rounds,
        "strategy": "fedavg",
        "seed": seed,
        "min_fit_clients": clients,
        "min_evaluate_clients": clients,
        "min_available_clients": clients,
        "round_timeout": round_timeout,
        "wait_timeout": 120.0,
        "fit_config": dict(fit_config),
        "evaluate_config": dict(evaluate_config),
    }


def loopback_server(
    federations: Mapping[str, Mapping[str, Any]],
    *,
    heartbeat_timeout: float = 10.0,
    max_poll_seconds: float = 5.0,
) -> dict[str, Any]:
    """A config document for a plain-text loopback server hosting ``federations``.

    Heartbeats every 0.5 s let a test notice a dead client within seconds;
    the launcher picks the port and keeps the state in ``RUN_DIR/state``.
    """
    return {
        "server": {
            "insecure": True,
            "heartbeat_interval": 0.5,
            "heartbeat_timeout": heartbeat_timeout,
            "max_poll_seconds": max_poll_seconds,
        },
        "federations": {name: dict(table) for name, table in federations.items()},
    }


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """A launcher logging to ``tmp_path``; everything it started is stopped at the end."""
    with Launcher(tmp_path) as running:
        yield running
