"""A real server process and two PyTorch client processes federate ``cifar10-cnn``."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import pytest

from tests.client_pytorch.conftest import CIFAR_TARBALL
from tests.helpers.datasets import write_cifar10_tarball
from tests.helpers.processes import (
    Proc,
    free_port,
    read_history,
    start_server,
    wait_healthy,
    write_config,
)

pytestmark = pytest.mark.slow

N_PER_BATCH = 20  # 100 training and 20 test records


def _start_client(tmp: Path, port: int, name: str, data_dir: Path) -> Proc:
    return Proc(
        name,
        [
            sys.executable,
            "-m",
            "orchard_pytorch",
            "client",
            "--server",
            f"127.0.0.1:{port}",
            "--federation",
            "cifar",
            "--insecure",
            "--name",
            name,
            "--connect-timeout",
            "60",
            "--data-dir",
            str(data_dir),
            # The generated tarball cannot match the official checksum.
            "--no-verify",
            "--device",
            "cpu",
        ],
        tmp / f"{name}.log",
        # Two clients and the server share two cores: one thread each.
        env={"OMP_NUM_THREADS": "1", "ORCHARD_MODEL": "cifar10-cnn"},
    )


def _logs(procs: list[Proc]) -> str:
    return "\n".join(p.tail() for p in procs)


def test_two_pytorch_clients_complete_two_rounds_of_cifar10_cnn(tmp_path: Path) -> None:
    tarball = tmp_path / "source" / CIFAR_TARBALL
    write_cifar10_tarball(tarball, N_PER_BATCH, seed=0)
    port = free_port()
    state_dir = tmp_path / "state"
    config = write_config(
        tmp_path / "server.toml",
        server={
            "address": f"127.0.0.1:{port}",
            "state_dir": str(state_dir),
            "insecure": True,
            "heartbeat_interval": 0.5,
            "heartbeat_timeout": 10.0,
            "max_poll_seconds": 5.0,
        },
        federations={
            "cifar": {
                "model": "cifar10-cnn",
                "num_rounds": 2,
                "strategy": "fedavg",
                "seed": 1,
                "min_fit_clients": 2,
                "min_evaluate_clients": 2,
                "min_available_clients": 2,
                "round_timeout": 120.0,
                "wait_timeout": 120.0,
                "fit_config": {"epochs": 1, "batch_size": 10, "learning_rate": 0.01},
                "evaluate_config": {"batch_size": 32},
            }
        },
    )
    procs: list[Proc] = []
    try:
        server = start_server(tmp_path, config)
        procs.append(server)
        wait_healthy(port, server)
        for i in range(2):
            data_dir = tmp_path / f"data-{i}"
            data_dir.mkdir()
            shutil.copy(tarball, data_dir / CIFAR_TARBALL)
            procs.append(_start_client(tmp_path, port, f"pytorch-{i}", data_dir))
        assert server.wait(240) == 0, _logs(procs)
        for client in procs[1:]:
            assert client.wait(60) == 0, _logs(procs)
        history = read_history(state_dir, "cifar")
        rounds = history["rounds"]
        assert [r["round"] for r in rounds] == [1, 2], _logs(procs)
        for record in rounds:
            fit = record["fit"]
            assert len(fit["participants"]) == 2 and not fit["dropped"], record
            # Each client trains on 90% of its half of the 100 records: 2 x 45.
            assert fit["num_examples"] == 90, record
            assert math.isfinite(record["evaluate"]["loss"]), record
        partitions = sorted(p["partition"] for p in rounds[0]["fit"]["participants"])
        assert partitions == [0, 1]
        client_log = procs[1].log.read_text()
        assert "epoch 1/1: loss " in client_log
        assert "using device cpu" in client_log
    finally:
        for proc in procs:
            proc.close()
