"""The client runtime against a real server: retries, SIGTERM, federation end."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from orchard.examples.logreg import logreg_spec
from tests.helpers.processes import (
    free_port,
    read_history,
    start_logreg_client,
    start_server,
    wait_healthy,
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
        server={
            "address": f"127.0.0.1:{port}",
            "insecure": True,
            "state_dir": str(tmp_path / "state"),
            "heartbeat_interval": 0.5,
            "heartbeat_timeout": 3.0,
            "max_poll_seconds": 2.0,
        },
        federations={"blobs": federation},
    )


def test_client_started_before_the_server_retries_then_finishes(tmp_path: Path) -> None:
    port = free_port()
    client = start_logreg_client(tmp_path, port, "blobs", "early")
    try:
        time.sleep(2.0)
        assert client.popen.poll() is None, client.tail()
        server = start_server(tmp_path, config(tmp_path, port))
        try:
            assert server.wait(60) == 0, server.tail() + client.tail()
            assert client.wait(30) == 0, client.tail()
        finally:
            server.close()
        text = client.log.read_text()
        assert "not reachable yet" in text and "retrying in" in text
        assert "federation 'blobs' ended (finished)" in text
        assert len(read_history(tmp_path / "state", "blobs")["rounds"]) == 2
    finally:
        client.close()


def test_sigterm_makes_the_client_leave_cleanly(tmp_path: Path) -> None:
    port = free_port()
    server = start_server(
        tmp_path,
        config(tmp_path, port, min_available_clients=2, min_fit_clients=2, min_evaluate_clients=2),
    )
    client = start_logreg_client(tmp_path, port, "blobs", "leaver")
    try:
        wait_healthy(port, server)
        deadline = time.monotonic() + 30
        while "joined federation" not in client.log.read_text():
            assert time.monotonic() < deadline, client.tail()
            time.sleep(0.1)
        client.kill(signal.SIGTERM)
        assert client.wait(15) == 0, client.tail()
        assert "left federation 'blobs' (SIGTERM)" in client.log.read_text()
        deadline = time.monotonic() + 10
        while "left (SIGTERM)" not in server.log.read_text():
            assert time.monotonic() < deadline, server.tail()
            time.sleep(0.1)
    finally:
        client.close()
        server.close()


def test_unknown_federation_exits_with_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    server = start_server(tmp_path, config(tmp_path, port))
    client = start_logreg_client(tmp_path, port, "nope", "lost")
    try:
        wait_healthy(port, server)
        assert client.wait(30) == 2
        text = client.log.read_text()
        assert "NOT_FOUND" in text and "no federation named 'nope'" in text and "blobs" in text
    finally:
        client.close()
        server.close()
