"""docker-compose.yml end to end: the framework clients train both federations to the end."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
from pytest_docker.plugin import Services

from tests.containers.conftest import logreg_federation, server_config
from tests.containers.stack import SERVER_IMAGE, Stack, docker, rounds_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_stack_trains_both_federations_and_records_every_round(
    docker_services: Services, framework_stack: Stack
) -> None:
    stack = framework_stack
    assert stack.wait_exit("server", timeout=300) == 0, stack.logs()[-8000:]
    assert stack.wait_exit("client_pytorch", timeout=60) == 0, stack.logs("client_pytorch")
    assert stack.wait_exit("client_mxnet", timeout=60) == 0, stack.logs("client_mxnet")
    assert len(stack.containers("client_pytorch")) == 2
    assert len(stack.containers("client_mxnet")) == 1

    for name, clients, framework in (("cifar10", 2, "pytorch"), ("mnist", 1, "mxnet")):
        history = stack.history(name)
        assert rounds_of(history) == [1, 2, 3], history
        for record in history["rounds"]:
            participants = record["fit"]["participants"]
            assert len(participants) == clients, record
            assert record["fit"]["dropped"] == {}, record
            assert {p["framework"] for p in participants} == {framework}
            assert math.isfinite(record["evaluate"]["loss"]), record
            assert 0.0 <= record["evaluate"]["metrics"]["accuracy"] <= 1.0
        # Each PyTorch container got its own data partition from the server.
        partitions = {p["partition"] for p in history["rounds"][0]["fit"]["participants"]}
        assert len(partitions) == clients
    files = set(stack.compose("run", "--rm", "--no-deps", "--entrypoint", "find", "server",
                              "/var/lib/orchard/state", "-type", "f").split())  # fmt: skip
    for name in ("cifar10", "mnist"):
        assert f"/var/lib/orchard/state/{name}/history.png" in files


def test_containers_run_unprivileged_without_capabilities_or_published_ports(
    docker_services: Services, framework_stack: Stack
) -> None:
    rows = framework_stack.containers()
    assert {r["Service"] for r in rows} >= {"server", "client_pytorch", "client_mxnet"}
    for row in rows:
        info = json.loads(docker("inspect", row["ID"]))[0]
        assert info["Config"]["User"] == "orchard", row["Name"]
        assert info["HostConfig"]["Init"] is True, row["Name"]
        assert not info["HostConfig"]["CapAdd"], row["Name"]  # NET_ADMIN: compose.loss.yml only
        assert not info["HostConfig"]["PortBindings"], row["Name"]  # compose.publish.yml only
        if row["Service"] != "server":
            assert info["HostConfig"]["NanoCpus"] > 0, row["Name"]  # a CPU limit per client
    server = next(r for r in rows if r["Service"] == "server")
    policy = json.loads(docker("inspect", server["ID"]))[0]["HostConfig"]["RestartPolicy"]
    assert policy["Name"] == "on-failure", policy


def test_image_of_the_server_carries_no_ml_framework(orchard_images: None) -> None:
    probe = (
        "import importlib.util as u; "
        "print([m for m in ('torch', 'mxnet', 'orchard_server') if u.find_spec(m)])"
    )
    out = docker("run", "--rm", "--network", "none", "--entrypoint", "python", SERVER_IMAGE,
                 "-c", probe)  # fmt: skip
    assert out.strip() == "['orchard_server']"


def test_teardown_leaves_no_containers_networks_or_volumes(
    orchard_images: None, workdir: Path
) -> None:
    config = server_config(workdir, "teardown", {"blobs": logreg_federation(2, num_rounds=1)})
    stack = Stack(
        project=f"orchardteardown{os.getpid()}",
        env={"ORCHARD_SERVER_CONFIG": str(config)},
        profiles=("reference",),
    )
    with stack.running(setup=["up -d --no-build server client_numpy"]):
        assert stack.wait_exit("server", timeout=120) == 0, stack.logs()
        used = stack.leftovers()
        assert used["containers"] and used["networks"] and used["volumes"], used
        # A running container too, to see that `down` stops it promptly
        # (init: true forwards SIGTERM; Python as PID 1 would ignore it).
        stack.compose("run", "-d", "--no-deps", "--name", f"{stack.project}-idle",
                      "--entrypoint", "sleep", "server", "600")  # fmt: skip
        started = time.monotonic()
    assert time.monotonic() - started < 30
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}
