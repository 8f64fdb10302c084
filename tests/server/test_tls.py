"""TLS on loopback: the server with a certificate from the development CA."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from orchard.examples.logreg import logreg_spec
from tests.helpers.processes import (
    REPO,
    free_port,
    read_history,
    start_logreg_client,
    start_server,
    write_config,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]


def test_tls_federation_and_untrusted_client(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    subprocess.run(
        [str(REPO / "docker" / "dev-certs.sh"), str(certs), "localhost,127.0.0.1"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    config = write_config(
        tmp_path / "server.toml",
        server={
            "address": f"127.0.0.1:{port}",
            "state_dir": str(tmp_path / "state"),
            "tls_cert": str(certs / "server.pem"),
            "tls_key": str(certs / "server.key"),
            "heartbeat_interval": 0.5,
            "heartbeat_timeout": 3.0,
        },
        federations={
            "blobs": {
                "model": "logreg",
                "tensors": [
                    {"name": t.name, "shape": list(t.shape)} for t in logreg_spec().tensors
                ],
                "num_rounds": 2,
                "min_fit_clients": 1,
                "min_evaluate_clients": 1,
                "min_available_clients": 1,
                "wait_timeout": 60.0,
            }
        },
    )
    server = start_server(tmp_path, config)
    untrusted = good = None
    try:
        # No CA given: the system roots do not trust the development CA.
        untrusted = start_logreg_client(
            tmp_path, port, "blobs", "untrusted", "--connect-timeout", "3", insecure=False
        )
        assert untrusted.wait(30) == 1
        assert "could not reach the server" in untrusted.log.read_text()
        good = start_logreg_client(
            tmp_path, port, "blobs", "trusted", "--ca-cert", str(certs / "ca.pem"), insecure=False
        )
        assert good.wait(60) == 0, good.tail() + server.tail()
        assert server.wait(30) == 0, server.tail()
        assert "WITHOUT TLS" not in server.log.read_text()
        assert len(read_history(tmp_path / "state", "blobs")["rounds"]) == 2
    finally:
        for proc in (untrusted, good, server):
            if proc is not None:
                proc.close()
