"""Failures in a running stack: a client container killed mid-round, the server restarted.

Both use the reference NumPy client from the server image, whose ``--fit-seconds``
makes a round last long enough to interrupt it at a known moment.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.containers.conftest import logreg_federation, server_config
from tests.containers.stack import Stack, StackError, container_logs, docker, rounds_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FIT_SECONDS = 3.0
HEARTBEAT_TIMEOUT = 4.0
ROUND_TIMEOUT = 120.0


def _reference_stack(name: str, config: Path, clients: int, fit_seconds: float) -> Stack:
    return Stack(
        project=f"orchard{name}{os.getpid()}",
        env={
            "ORCHARD_SERVER_CONFIG": str(config),
            "ORCHARD_NUMPY_CLIENTS": str(clients),
            "ORCHARD_NUMPY_FIT_SECONDS": str(fit_seconds),
        },
        profiles=("reference",),
    )


def _container_in_round(stack: Stack, service: str, text: str, timeout: float) -> dict[str, str]:
    """The first container of ``service`` whose log shows ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for row in stack.containers(service):
            if text in container_logs(row["ID"]):
                return row
        time.sleep(0.3)
    raise StackError(f"no {service} container logged {text!r}\n{stack.logs()}")


def test_client_killed_mid_round_does_not_stall_the_round(
    orchard_images: None, workdir: Path
) -> None:
    config = server_config(
        workdir,
        "kill",
        {
            "blobs": logreg_federation(
                2, num_rounds=3, min_available_clients=2, round_timeout=ROUND_TIMEOUT
            )
        },
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
    )
    stack = _reference_stack("kill", config, clients=4, fit_seconds=FIT_SECONDS)
    with stack.running(setup=["up -d --no-build server client_numpy"]):
        victim = _container_in_round(stack, "client_numpy", "round 1: fit task", timeout=60)
        docker("kill", victim["ID"])
        # The server names clients by service and replica (<project>-client_numpy-3).
        hostname = "client_numpy-" + victim["Name"].rsplit("-", 1)[1]
        assert stack.wait_exit("server", timeout=120) == 0, stack.logs()
        history = stack.history("blobs")
    assert rounds_of(history) == [1, 2, 3]
    first = history["rounds"][0]
    assert any(name.startswith(hostname) for name in first["fit"]["dropped"]), first
    assert len(first["fit"]["participants"]) >= 2
    # Dropped once its heartbeats stopped, long before the round's deadline.
    assert first["fit"]["duration_s"] < ROUND_TIMEOUT / 4, first
    for later in history["rounds"][1:]:
        assert all(p["client"] != hostname for p in later["fit"]["participants"])


def test_restarted_server_resumes_from_its_checkpoint(orchard_images: None, workdir: Path) -> None:
    config = server_config(workdir, "restart", {"blobs": logreg_federation(2, num_rounds=5)})
    stack = _reference_stack("restart", config, clients=2, fit_seconds=1.0)
    with stack.running(setup=["up -d --no-build server client_numpy"]):
        stack.wait_log("server", "round 2/5: federated evaluation", timeout=90)
        stack.compose("restart", "server")
        assert stack.wait_exit("server", timeout=120) == 0, stack.logs()
        assert stack.wait_exit("client_numpy", timeout=60) == 0, stack.logs()
        history = stack.history("blobs")
        server_logs = stack.logs("server")
        client_logs = stack.logs("client_numpy")
    assert rounds_of(history) == [1, 2, 3, 4, 5]
    starts = re.findall(r"federations: blobs \(logreg, (\d)/5 rounds done\)", server_logs)
    assert len(starts) == 2, server_logs
    assert starts[0] == "0" and int(starts[1]) >= 2, starts
    assert "stopping on signal" in server_logs
    # Both clients found the restarted server again and finished with it.
    assert client_logs.count("joined federation 'blobs'") >= 4, client_logs
