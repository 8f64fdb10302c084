"""TLS on loopback: the server with a certificate from the development CA."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from orchard.examples.logreg import logreg_spec
from orchard.launch import ClientOptions, Launcher, read_history
from tests.helpers.processes import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]


def test_tls_federation_and_untrusted_client(tmp_path: Path, launcher: Launcher) -> None:
    certs = tmp_path / "certs"
    subprocess.run(
        [str(REPO / "docker" / "dev-certs.sh"), str(certs), "localhost,127.0.0.1"],
        check=True,
        capture_output=True,
    )
    server = launcher.start_server(
        {
            "server": {
                "state_dir": tmp_path / "state",
                "tls_cert": certs / "server.pem",
                "tls_key": certs / "server.key",
                "heartbeat_interval": 0.5,
                "heartbeat_timeout": 3.0,
            },
            "federations": {
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
        },
        # The launcher checks a TLS server's health over TLS.
        ca_cert=certs / "ca.pem",
    )
    assert not server.insecure
    # No CA given: the system roots do not trust the development CA.
    untrusted = launcher.start_client(
        "numpy", ClientOptions(federation="blobs", name="untrusted", connect_timeout=3.0)
    )
    assert untrusted.wait(30) == 1
    assert "could not reach the server" in untrusted.read_log()
    good = launcher.start_client(
        "numpy", ClientOptions(federation="blobs", name="trusted", ca_cert=certs / "ca.pem")
    )
    assert good.wait(60) == 0, launcher.tails()
    assert server.process.wait(30) == 0, launcher.tails()
    assert "WITHOUT TLS" not in server.process.read_log()
    assert len(read_history(tmp_path / "state", "blobs")["rounds"]) == 2


def test_web_view_serves_https_with_the_api_cert_and_needs_its_token(
    tmp_path: Path, launcher: Launcher
) -> None:
    import ssl
    import urllib.error
    import urllib.request

    from orchard.launch import free_port
    from orchard_server.status import fetch_status

    certs = tmp_path / "certs"
    subprocess.run(
        [str(REPO / "docker" / "dev-certs.sh"), str(certs), "localhost,127.0.0.1"],
        check=True,
        capture_output=True,
    )
    web_port = free_port()
    server = launcher.start_server(
        {
            "server": {
                "state_dir": tmp_path / "state",
                "tls_cert": certs / "server.pem",
                "tls_key": certs / "server.key",
                "web_port": web_port,
                "web_token": "watch",
            },
            "federations": {
                "blobs": {
                    "model": "logreg",
                    "tensors": [
                        {"name": t.name, "shape": list(t.shape)} for t in logreg_spec().tensors
                    ],
                    "num_rounds": 1,
                    "wait_timeout": 60.0,
                }
            },
        },
        ca_cert=certs / "ca.pem",
    )
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    url = f"https://127.0.0.1:{web_port}/api/federations"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, context=context, timeout=10)
    assert refused.value.code == 401
    with urllib.request.urlopen(url + "?token=watch", context=context, timeout=10) as answer:
        assert b'"name": "blobs"' in answer.read()
    (status,) = fetch_status(server.address, token="watch", ca_cert=certs / "ca.pem")
    assert status.name == "blobs"
