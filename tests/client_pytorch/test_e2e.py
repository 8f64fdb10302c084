"""A real server process and two PyTorch client processes federate ``cifar10-cnn``."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from orchard.launch import ClientOptions, Launcher, Process
from tests.helpers.client_data import CIFAR_TARBALL
from tests.helpers.datasets import write_cifar10_tarball
from tests.helpers.processes import fedavg_federation, loopback_server

pytestmark = pytest.mark.slow

N_PER_BATCH = 20  # 100 training and 20 test records


def test_two_pytorch_clients_complete_two_rounds_of_cifar10_cnn(
    tmp_path: Path, launcher: Launcher
) -> None:
    tarball = tmp_path / "source" / CIFAR_TARBALL
    write_cifar10_tarball(tarball, N_PER_BATCH, seed=0)
    federation = fedavg_federation(
        "cifar10-cnn",
        clients=2,
        num_rounds=2,
        fit_config={"epochs": 1, "batch_size": 10, "learning_rate": 0.01},
        evaluate_config={"batch_size": 32},
    )
    server = launcher.start_server(loopback_server({"cifar": federation}))
    clients: list[Process] = []
    for i in range(2):
        data_dir = tmp_path / f"data-{i}"
        data_dir.mkdir()
        shutil.copy(tarball, data_dir / CIFAR_TARBALL)
        client = launcher.start_client(
            "pytorch",
            ClientOptions(
                federation="cifar",
                name=f"pytorch-{i}",
                model="cifar10-cnn",
                dataset="cifar10",
                data_dir=data_dir,
                device="cpu",
                # The generated tarball cannot match the official checksum.
                no_verify=True,
                env={"OMP_NUM_THREADS": "1"},
            ),
        )
        clients.append(client)
    assert server.process.wait(240) == 0, launcher.tails()
    for client in clients:
        assert client.wait(60) == 0, launcher.tails()
    rounds = server.history("cifar")["rounds"]
    assert [r["round"] for r in rounds] == [1, 2], launcher.tails()
    for record in rounds:
        fit = record["fit"]
        assert len(fit["participants"]) == 2 and not fit["dropped"], record
        # Each client trains on 90% of its half of the 100 records: 2 x 45.
        assert fit["num_examples"] == 90, record
        assert math.isfinite(record["evaluate"]["loss"]), record
    partitions = sorted(p["partition"] for p in rounds[0]["fit"]["participants"])
    assert partitions == [0, 1]
    client_log = clients[0].read_log()
    assert "epoch 1/1: loss " in client_log
    assert "using device cpu" in client_log
