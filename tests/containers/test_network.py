"""The simulated network and separate hosts: link profiles, packet loss, TLS, client-only setup."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from orchard.netsim import load_profiles
from tests.containers.conftest import federation, logreg_federation, server_config
from tests.containers.stack import REPO, Stack, StackError, docker, rounds_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PROFILES = load_profiles(REPO / "deploy" / "network-profiles.toml")


@pytest.fixture(scope="module")
def certs(workdir: Path) -> Path:
    """A development CA and server certificate from the script behind `make certs`."""
    directory = workdir / "certs"
    subprocess.run(
        [str(REPO / "docker" / "dev-certs.sh"), str(directory), "server,localhost,127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return directory


def test_link_profiles_slow_their_clients_and_loss_applies(
    orchard_images: None, workdir: Path, certs: Path
) -> None:
    """Three federations, one client each, over TLS: no profile, "3g" and "lossy"."""
    config = server_config(
        workdir,
        "network",
        {name: logreg_federation(1, num_rounds=3) for name in ("near", "far", "lossy")},
    )
    stack = Stack(
        project=f"orchardnet{os.getpid()}",
        files=(
            REPO / "docker-compose.yml",
            REPO / "deploy" / "compose.tls.yml",
            REPO / "tests" / "containers" / "compose.network.yml",
        ),
        env={"ORCHARD_SERVER_CONFIG": str(config), "ORCHARD_CERTS": str(certs)},
        profiles=("network",),
    )
    with stack.running(setup=["up -d --no-build server client_near client_far client_lossy"]):
        assert stack.wait_exit("server", timeout=180) == 0, stack.logs()
        histories = {name: stack.history(name) for name in ("near", "far", "lossy")}
        server_logs = stack.logs("server")
        far_logs = stack.logs("client_far")
        lossy_logs = stack.logs("client_lossy")
        near_logs = stack.logs("client_near")

    for name, history in histories.items():
        assert rounds_of(history) == [1, 2, 3], (name, history)
    # A fit task crosses the link down and its result crosses it back up: the
    # server sees every round of the far client take at least the one-way
    # delay (in fact twice it) longer than the near client's.
    delay = PROFILES["3g"].up.delay_ms / 1000
    near = [r["fit"]["duration_s"] for r in histories["near"]["rounds"]]
    far = [r["fit"]["duration_s"] for r in histories["far"]["rounds"]]
    assert min(far) >= statistics.median(near) + delay, (near, far)
    assert "link emulator on 127.0.0.1:" in far_logs
    assert "-> server:8080 (3g: 150±40 ms one way, 0.5/2 Mbit/s up/down" in far_logs
    assert "link emulator" not in near_logs
    assert "dropping 2.0% of packets from port 8080" in lossy_logs
    # TLS all the way: nobody fell back to plain text.
    assert "WITHOUT TLS" not in server_logs
    for logs in (near_logs, far_logs, lossy_logs):
        assert "insecure channel" not in logs
        assert "joined federation" in logs


def test_loss_without_privileges_is_refused_with_a_reason(orchard_images: None) -> None:
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none",
         "-e", "ORCHARD_NET_LOSS=0.05", "-e", "ORCHARD_SERVER=server:8080",
         "orchard/client-mxnet:latest", "true"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "needs root with CAP_NET_ADMIN" in done.stderr


def test_client_only_setup_joins_a_server_elsewhere_over_tls(
    orchard_images: None, workdir: Path, datasets: Path, certs: Path
) -> None:
    """docker-compose.client.yml on "another machine": a separate project and network.

    The client project cannot resolve the server until the test connects its
    containers to the server's network, as a remote machine would come into
    reach; the clients keep retrying until then.
    """
    config = server_config(
        workdir,
        "remote",
        {
            "cifar10": federation("cifar10-cnn", 1, num_rounds=2, fit_config={"batch_size": 16}),
            "mnist": federation("mnist-mlp", 1, num_rounds=2, num_partitions=2),
        },
    )
    server = Stack(
        project=f"orchardremote{os.getpid()}",
        files=(REPO / "docker-compose.yml", REPO / "deploy" / "compose.tls.yml"),
        env={"ORCHARD_SERVER_CONFIG": str(config), "ORCHARD_CERTS": str(certs)},
    )
    clients = Stack(
        project=f"orchardclients{os.getpid()}",
        files=(REPO / "docker-compose.client.yml",),
        env={
            "ORCHARD_SERVER": "server:8080",
            "ORCHARD_CA_FILE": str(certs / "ca.pem"),
            "ORCHARD_DATA_SOURCE": str(datasets),
            "ORCHARD_MXNET_DATASET": "mnist",
            "ORCHARD_NO_VERIFY": "1",
        },
    )
    with (
        server.running(setup=["up -d --no-build server"]),
        clients.running(),
    ):
        network = f"{server.project}_federation"
        deadline = time.monotonic() + 60
        rows = clients.containers()
        while len(rows) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            rows = clients.containers()
        assert {r["Service"] for r in rows} == {"client_pytorch", "client_mxnet"}, rows
        for row in rows:
            docker("network", "connect", network, row["ID"])
        try:
            assert server.wait_exit("server", timeout=180) == 0
            assert clients.wait_exit("client_pytorch", timeout=60) == 0
            assert clients.wait_exit("client_mxnet", timeout=60) == 0
        except StackError as exc:
            raise StackError(f"{exc}\n{clients.logs()}") from None
        for name in ("cifar10", "mnist"):
            assert rounds_of(server.history(name)) == [1, 2]
        client_logs = clients.logs()
        server_logs = server.logs("server")
        for row in rows:  # let `down` remove the client network: detach from the server's
            docker("network", "disconnect", "--force", network, row["ID"], check=False)
    assert "insecure channel" not in client_logs
    assert "WITHOUT TLS" not in server_logs
    assert "TLS is on: clients must verify certificate /run/secrets/server.pem" in server_logs
