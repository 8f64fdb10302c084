"""docker-stack.yml on a one-node Docker Swarm that the test creates and leaves again."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.containers.conftest import federation, server_config
from tests.containers.stack import (
    BASE_ENV,
    REPO,
    StackError,
    clean_environ,
    docker,
    read_volume_file,
    rounds_of,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").strip()


def _wait_gone(kind: str, label: str, timeout: float = 60) -> None:
    """Wait until no object of ``kind`` (ps, network ls, volume ls) carries ``label``."""
    command = ["ps", "-a"] if kind == "container" else [kind, "ls"]
    deadline = time.monotonic() + timeout
    while docker(*command, "-q", "--filter", f"label={label}").split():
        if time.monotonic() > deadline:
            raise StackError(f"{kind}s labelled {label} still there after {timeout:.0f} s")
        time.sleep(1)


@pytest.fixture
def swarm(orchard_images: None) -> Iterator[None]:
    """A one-node swarm advertised on loopback (or the engine's own, left as found)."""
    created = _swarm_state() != "active"
    had_gwbridge = bool(docker("network", "ls", "-q", "--filter", "name=^docker_gwbridge$").split())
    if created:
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        yield
    finally:
        if created:
            docker("swarm", "leave", "--force", check=False)
            if not had_gwbridge:
                docker("network", "rm", "docker_gwbridge", check=False)


def test_stack_deploys_on_a_swarm_and_completes(swarm: None, workdir: Path, datasets: Path) -> None:
    config = server_config(
        workdir,
        "swarm",
        {
            "cifar10": federation("cifar10-cnn", 2, num_rounds=2, fit_config={"batch_size": 16}),
            "mnist": federation("mnist-mlp", 1, num_rounds=2, num_partitions=2),
        },
    )
    stack = f"orchardswarm{os.getpid()}"
    env = {
        **clean_environ(),
        **BASE_ENV,
        "ORCHARD_PORT": str(_free_port()),
        "ORCHARD_SERVER_CONFIG": str(config),
        "ORCHARD_DATA_SOURCE": str(datasets),
        "ORCHARD_PYTORCH_CLIENTS": "2",
        "ORCHARD_MXNET_CLIENTS": "1",
        "ORCHARD_MXNET_DATASET": "mnist",
        "ORCHARD_NO_VERIFY": "1",
    }
    label = f"com.docker.stack.namespace={stack}"
    try:
        deployed = subprocess.run(
            ["docker", "stack", "deploy", "--resolve-image", "never", "-c",
             str(REPO / "docker-stack.yml"), stack],
            env=env, cwd=REPO, check=False, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert deployed.returncode == 0, f"docker stack deploy failed:\n{deployed.stderr}"
        deadline = time.monotonic() + 240
        state = ""
        while not state.startswith(("Complete", "Failed", "Rejected")):
            if time.monotonic() > deadline:
                raise StackError(f"server task still {state!r} after 240 s")
            time.sleep(2)
            states = docker(
                "service", "ps", f"{stack}_server", "--format", "{{.CurrentState}}", check=False
            ).splitlines()
            state = states[0] if states else ""
        logs = docker("service", "logs", "--raw", f"{stack}_server", check=False)
        assert state.startswith("Complete"), f"server task {state}\n{logs}"
        services = {
            s["Name"]: s
            for s in map(json.loads, docker("service", "ls", "--format", "{{json .}}").splitlines())
        }
        assert services[f"{stack}_client_pytorch"]["Replicas"].endswith("/2")
        assert services[f"{stack}_client_mxnet"]["Replicas"].endswith("/1")
        for name, clients in (("cifar10", 2), ("mnist", 1)):
            history = json.loads(read_volume_file(f"{stack}_state", f"{name}/history.json"))
            assert rounds_of(history) == [1, 2], history
            assert all(len(r["fit"]["participants"]) == clients for r in history["rounds"])
    finally:
        docker("stack", "rm", stack, check=False)
        _wait_gone("container", label)
        _wait_gone("network", label)
        for volume in docker("volume", "ls", "-q", "--filter", f"label={label}").split():
            docker("volume", "rm", volume)
    assert not docker("volume", "ls", "-q", "--filter", f"label={label}").split()
