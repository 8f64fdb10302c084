"""Fixtures of the container tests: a real Docker engine, fresh images, generated data.

The tests need a Docker engine (``docker info`` must answer); without one
they are skipped, saying so. With one, the images are (re)built first with
``make -f docker.mk images`` (cached layers make that quick when nothing
changed), so the tests always run the code of this tree.

Data: no dataset can be downloaded here, so the stack's dataset directory is a
host directory (``ORCHARD_DATA_SOURCE``) holding files generated in the
official formats by ``tests.helpers.datasets``: CIFAR-10 already extracted (the
reader uses extracted batch files as they are) and the four MNIST IDX files,
which the MXNet client takes with ORCHARD_NO_VERIFY=1 (generated files cannot
match the official checksums).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.containers.stack import CLEANUP, REPO, SETUP, Stack
from tests.helpers.datasets import write_cifar10_tarball, write_mnist_files
from tests.helpers.processes import write_config


def _no_engine(reason: str) -> None:
    """Skip, unless the run requires the engine (CI sets ORCHARD_REQUIRE_DOCKER=1)."""
    if os.environ.get("ORCHARD_REQUIRE_DOCKER") == "1":
        pytest.fail(f"ORCHARD_REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The engine's version; skips the container tests when no engine answers."""
    if shutil.which("docker") is None:
        _no_engine("no Docker engine reachable: the docker command is not installed")
    done = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no answer"])[-1]
        _no_engine(f"no Docker engine reachable (docker info: {reason})")
    return done.stdout.strip()


@pytest.fixture(scope="session")
def orchard_images(docker_engine: str) -> None:
    """Build the three images from this tree (offline when no registry answers)."""
    done = subprocess.run(
        ["make", "--no-print-directory", "-f", "docker.mk", "images"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"make -f docker.mk images failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """A directory the containers' user (uid 10001) can read: configs, data, certificates.

    pytest's own temporary directories are private to their owner, and the
    containers read these files through bind mounts as another user.
    """
    path = Path(tempfile.mkdtemp(prefix="orchard-containers-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def datasets(workdir: Path) -> Path:
    """Generated CIFAR-10 (extracted) and MNIST, in the official formats, as the clients' /data.

    Generated MNIST files cannot match the official checksums, so the MXNet
    client runs with ORCHARD_NO_VERIFY=1 (files found in the cache are used as
    they are; downloads would still be verified).
    """
    data = workdir / "data"
    data.mkdir(mode=0o755)
    tarball = workdir / "cifar-10-binary.tar.gz"
    write_cifar10_tarball(tarball, 20, seed=0)
    with tarfile.open(tarball) as archive:
        archive.extractall(data, filter="data")
    tarball.unlink()
    write_mnist_files(data / "mnist", 1200, 200, seed=0)
    for root, dirs, files in os.walk(data):
        for name in dirs:
            Path(root, name).chmod(0o755)
        for name in files:
            Path(root, name).chmod(0o644)
    return data


def server_config(
    workdir: Path, name: str, federations: Mapping[str, Mapping[str, Any]], **server: Any
) -> Path:
    """A server config file readable by the server container, with fast test timings."""
    path = write_config(
        workdir / f"{name}.toml",
        server={
            "address": "0.0.0.0:8080",
            "state_dir": "/var/lib/orchard/state",
            "heartbeat_interval": 1.0,
            "heartbeat_timeout": 4.0,
            "max_poll_seconds": 5.0,
            **server,
        },
        federations=federations,
    )
    path.chmod(0o644)
    return path


def federation(model: str, clients: int, **overrides: Any) -> dict[str, Any]:
    """A small federation: every client takes part in every round."""
    base: dict[str, Any] = {
        "model": model,
        "num_rounds": 3,
        "strategy": "fedavg",
        "seed": 0,
        "min_fit_clients": clients,
        "min_evaluate_clients": clients,
        "min_available_clients": clients,
        "round_timeout": 120.0,
        "wait_timeout": 120.0,
    }
    base.update(overrides)
    return base


LOGREG_TENSORS = [
    {"name": "linear.weight", "shape": [3, 8]},
    {"name": "linear.bias", "shape": [3]},
]


def logreg_federation(clients: int, **overrides: Any) -> dict[str, Any]:
    """A federation of the reference NumPy client (orchard.examples.logreg)."""
    return federation(
        "logreg",
        clients,
        tensors=LOGREG_TENSORS,
        fit_config={"epochs": 1, "batch_size": 16, "learning_rate": 0.1},
        **overrides,
    )


# --- pytest-docker: the framework stack shared by the stack tests ---------------------


@pytest.fixture(scope="session")
def framework_stack(orchard_images: None, workdir: Path, datasets: Path) -> Stack:
    """Server, two PyTorch clients (CIFAR-10) and one MXNet client (MNIST), generated data."""
    config = server_config(
        workdir,
        "framework",
        {
            "cifar10": federation(
                "cifar10-cnn",
                2,
                fit_config={"epochs": 1, "batch_size": 16, "learning_rate": 0.01},
                evaluate_config={"batch_size": 64},
            ),
            "mnist": federation(
                "mnist-mlp",
                1,
                num_partitions=2,
                fit_config={"epochs": 1, "batch_size": 64, "learning_rate": 0.1},
                evaluate_config={"batch_size": 256},
            ),
        },
    )
    return Stack(
        project=f"orchardtest{os.getpid()}",
        env={
            "ORCHARD_SERVER_CONFIG": str(config),
            "ORCHARD_DATA_SOURCE": str(datasets),
            "ORCHARD_PYTORCH_CLIENTS": "2",
            "ORCHARD_MXNET_CLIENTS": "1",
            "ORCHARD_PYTORCH_EVALUATORS": "0",
            "ORCHARD_MXNET_EVALUATORS": "0",
            "ORCHARD_MXNET_DATASET": "mnist",
            "ORCHARD_NO_VERIFY": "1",
        },
    )


@pytest.fixture(scope="session")
def docker_compose_command(framework_stack: Stack) -> str:
    return framework_stack.compose_command


@pytest.fixture(scope="session")
def docker_compose_file(framework_stack: Stack) -> list[str]:
    return [str(f) for f in framework_stack.files]


@pytest.fixture(scope="session")
def docker_compose_project_name(framework_stack: Stack) -> str:
    return framework_stack.project


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    """``up -d``: ``up --wait`` fails as soon as a one-shot client exits, even with 0."""
    return list(SETUP)


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return list(CLEANUP)
