"""A client whose model does not match the federation's spec is refused at join.

A real server hosts an ``mnist-cnn`` and an ``mnist-mlp`` federation; a
PyTorch client running ``mnist-mlp`` asks to join the CNN federation and an
MXNet client running ``mnist-cnn`` the MLP one. Each must exit with status 2
and a message naming the first tensor that differs, before any training.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchard.launch import ClientOptions, Launcher
from tests.helpers.datasets import write_mnist_files
from tests.helpers.processes import loopback_server

pytestmark = pytest.mark.slow


def _federation(model: str) -> dict[str, object]:
    return {
        "model": model,
        "num_rounds": 1,
        "min_fit_clients": 1,
        "min_evaluate_clients": 1,
        "min_available_clients": 1,
        "wait_timeout": 60.0,
    }


def test_clients_with_the_wrong_model_are_refused_naming_the_first_differing_tensor(
    tmp_path: Path, mxnet_interpreter: Path, launcher: Launcher
) -> None:
    source = tmp_path / "mnist"
    write_mnist_files(source, 40, 10, seed=0)
    server = launcher.start_server(
        loopback_server({"cnn": _federation("mnist-cnn"), "mlp": _federation("mnist-mlp")})
    )

    def options(federation: str, name: str, model: str) -> ClientOptions:
        # Generated files cannot match the official checksums.
        return ClientOptions(
            federation=federation,
            name=name,
            model=model,
            data_dir=source,
            device="cpu",
            no_verify=True,
        )

    pytorch = launcher.start_client("pytorch", options("cnn", "pt", "mnist-mlp"))
    mxnet = launcher.start_client(
        "mxnet", options("mlp", "mx", "mnist-cnn"), python=str(mxnet_interpreter)
    )

    assert pytorch.wait(60) == 2, pytorch.tail()
    assert mxnet.wait(60) == 2, mxnet.tail()
    pytorch_log = pytorch.read_log()
    assert (
        "model spec mismatch with federation 'cnn' (model 'mnist-cnn'): tensor #0: "
        "federation expects conv1.weight: float32[32, 1, 5, 5], "
        "client has fc1.weight: float32[128, 784]"
    ) in pytorch_log, pytorch.tail()
    mxnet_log = mxnet.read_log()
    assert (
        "model spec mismatch with federation 'mlp' (model 'mnist-mlp'): tensor #0: "
        "federation expects fc1.weight: float32[128, 784], "
        "client has conv1.weight: float32[32, 1, 5, 5]"
    ) in mxnet_log, mxnet.tail()
    # Refused before any work: neither client trained.
    assert "epoch 1/" not in pytorch_log + mxnet_log
    assert server.process.running, server.process.tail()
