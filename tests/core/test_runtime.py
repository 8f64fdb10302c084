"""The client runtime against a real server: retries, SIGTERM, federation end."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from orchard.examples.logreg import logreg_spec
from orchard.launch import (
    ClientOptions,
    Launcher,
    Process,
    free_port,
    read_history,
    write_config,
)

pytestmark = pytest.mark.slow


def config(tmp_path: Path, port: int, **fed: object) -> Path:
    federation = {
        "model": "logreg",
        "tensors": [{"name": t.name, "shape": list(t.shape)} for t in logreg_spec().tensors],
        "num_rounds": 2,
        "min_fit_clients": 1,
        "min_evaluate_clients": 1,
        "min_available_clients": 1,
        "round_timeout": 30.0,
        "wait_timeout": 60.0,
        **fed,
    }
    return write_config(
        tmp_path / "server.toml",
        {
            "server": {
                "address": f"127.0.0.1:{port}",
                "insecure": True,
                "state_dir": tmp_path / "state",
                "heartbeat_interval": 0.5,
                "heartbeat_timeout": 3.0,
                "max_poll_seconds": 2.0,
            },
            "federations": {"blobs": federation},
        },
    )


def logreg_client(launcher: Launcher, port: int, federation: str, name: str) -> Process:
    """The reference client, told the server's address (it may not be running yet)."""
    options = ClientOptions(
        federation=federation, name=name, server=f"127.0.0.1:{port}", insecure=True
    )
    return launcher.start_client("numpy", options)


def test_client_started_before_the_server_retries_then_finishes(
    tmp_path: Path, launcher: Launcher
) -> None:
    port = free_port()
    client = logreg_client(launcher, port, "blobs", "early")
    time.sleep(2.0)
    assert client.running, client.tail()
    server = launcher.start_server(config(tmp_path, port))
    assert server.process.wait(60) == 0, launcher.tails()
    assert client.wait(30) == 0, client.tail()
    text = client.read_log()
    assert "not reachable yet" in text and "retrying in" in text
    assert "federation 'blobs' ended (finished)" in text
    assert len(read_history(tmp_path / "state", "blobs")["rounds"]) == 2


def test_sigterm_makes_the_client_leave_cleanly(tmp_path: Path, launcher: Launcher) -> None:
    port = free_port()
    server = launcher.start_server(
        config(tmp_path, port, min_available_clients=2, min_fit_clients=2, min_evaluate_clients=2)
    )
    client = logreg_client(launcher, port, "blobs", "leaver")
    deadline = time.monotonic() + 30
    while "joined federation" not in client.read_log():
        assert time.monotonic() < deadline, client.tail()
        time.sleep(0.1)
    client.send_signal(signal.SIGTERM)
    assert client.wait(15) == 0, client.tail()
    assert "left federation 'blobs' (SIGTERM)" in client.read_log()
    deadline = time.monotonic() + 10
    while "left (SIGTERM)" not in server.process.read_log():
        assert time.monotonic() < deadline, server.process.tail()
        time.sleep(0.1)


def test_unknown_federation_exits_with_a_clear_error(tmp_path: Path, launcher: Launcher) -> None:
    port = free_port()
    launcher.start_server(config(tmp_path, port))
    client = logreg_client(launcher, port, "nope", "lost")
    assert client.wait(30) == 2
    text = client.read_log()
    assert "NOT_FOUND" in text and "no federation named 'nope'" in text and "blobs" in text
