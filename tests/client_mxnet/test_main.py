"""``python -m orchard_mxnet``: options, environment variables, exit codes, and a
real federation of a server and two MXNet client processes (last, slow)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")

from orchard.client.adapter import AdapterClient  # noqa: E402
from orchard.client.cli import make_client_factory  # noqa: E402
from orchard.client.numpy_client import ClientContext  # noqa: E402
from orchard.data.partition import PartitionSpec, train_val_split  # noqa: E402
from orchard.messages import Role  # noqa: E402
from orchard.models import get_model_spec  # noqa: E402
from orchard_mxnet import cli, device  # noqa: E402
from orchard_mxnet.client import MXNetAdapter  # noqa: E402
from tests.client_mxnet.conftest import GeneratedMnist, install_generated_mnist  # noqa: E402
from tests.helpers.crossframework import ClientDataSource, start_framework_client  # noqa: E402
from tests.helpers.datasets import MNIST_FILENAMES  # noqa: E402
from tests.helpers.processes import (  # noqa: E402
    REPO,
    Proc,
    fedavg_federation,
    start_loopback_server,
    tails,
)

pytestmark = pytest.mark.mxnet

_ENV = (
    "ORCHARD_MODEL",
    "ORCHARD_DEVICE",
    "ORCHARD_DATASET",
    "ORCHARD_DATASET_MIRROR",
    "ORCHARD_FEDERATION",
    "ORCHARD_SEED",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


def test_client_options_default_to_mnist_mlp_on_mnist_with_auto_device() -> None:
    args = cli.build_parser().parse_args(["client", "--federation", "digits"])
    # No --dataset: the model's own (mnist for both MXNet models).
    assert (args.model, args.dataset, args.device) == ("mnist-mlp", None, "auto")
    assert args.federation == "digits"
    assert args.server == "localhost:8080"  # a shared option, from orchard.client.cli
    assert args.dataset_mirror is None


def test_client_options_come_from_orchard_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORCHARD_MODEL", "mnist-cnn")
    monkeypatch.setenv("ORCHARD_DEVICE", "cpu")
    monkeypatch.setenv("ORCHARD_DATASET", "fashion-mnist")
    monkeypatch.setenv("ORCHARD_FEDERATION", "fashion")
    args = cli.build_parser().parse_args(["client"])
    assert (args.model, args.dataset, args.device) == ("mnist-cnn", "fashion-mnist", "cpu")
    assert args.federation == "fashion"
    # Flags win over the environment.
    args = cli.build_parser().parse_args(["client", "--model", "mnist-mlp", "--device", "auto"])
    assert (args.model, args.device) == ("mnist-mlp", "auto")


def test_unknown_choices_are_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.build_parser().parse_args(["baseline", "--model", "cifar10-cnn"])
    assert caught.value.code == 2
    assert "invalid choice: 'cifar10-cnn'" in capsys.readouterr().err


def _client_args(generated: GeneratedMnist, *extra: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(
        ["client", "--federation", "digits", "--data-dir", str(generated.data_dir), *extra]
    )


def test_the_factory_loads_the_partition_the_server_assigned(
    generated_mnist: GeneratedMnist,
) -> None:
    args = _client_args(generated_mnist, "--seed", "4", "--device", "cpu")
    factory = make_client_factory(args, MXNetAdapter(args.device), role=Role.TRAINER)
    ctx = ClientContext(
        federation="digits",
        client_id="c-1",
        partition_id=2,
        num_partitions=3,
        model_spec=get_model_spec("mnist-mlp"),
    )
    client = factory(ctx)
    assert isinstance(client.adapter, MXNetAdapter)
    labels = generated_mnist.arrays.train_labels.astype(np.int64)
    share = PartitionSpec(scheme="iid", num_partitions=3, seed=4).select(labels, 2)
    train_idx, _ = train_val_split(share, val_fraction=0.1, seed=4)
    np.testing.assert_array_equal(client.data.train.labels, labels[train_idx])
    np.testing.assert_array_equal(
        client.data.train.images, generated_mnist.arrays.train_images[train_idx]
    )


def test_the_factory_builds_dirichlet_partitions_with_alpha(
    generated_mnist: GeneratedMnist,
) -> None:
    args = _client_args(
        generated_mnist, "--partition-scheme", "dirichlet", "--dirichlet-alpha", "0.3"
    )
    ctx = ClientContext(
        federation="digits",
        client_id="c-0",
        partition_id=0,
        num_partitions=2,
        model_spec=get_model_spec("mnist-mlp"),
    )
    client = make_client_factory(args, MXNetAdapter("cpu"), role=Role.TRAINER)(ctx)
    assert isinstance(client, AdapterClient)
    assert client.data.partition == PartitionSpec(
        scheme="dirichlet", num_partitions=2, seed=0, alpha=0.3
    )


def test_baseline_command_prints_epochs_and_the_evaluation(
    generated_mnist: GeneratedMnist, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        [
            "baseline",
            "--data-dir",
            str(generated_mnist.data_dir),
            "--epochs",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("centralized baseline: mnist-mlp on mnist (mxnet, cpu)")
    assert out[1].startswith("epoch 1/1: train cross-entropy ")
    assert out[2].startswith("test evaluation on 100 examples: cross-entropy ")


def test_asking_for_a_missing_gpu_exits_2_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setattr(device, "_gpu_count", lambda: 0)
    with caplog.at_level(logging.ERROR):
        code = cli.main(["baseline", "--data-dir", str(tmp_path), "--device", "gpu"])
    assert code == 2
    assert "--device gpu (ORCHARD_DEVICE) asks for a GPU, but MXNet sees no GPU" in caplog.text
    assert "Traceback" not in caplog.text


def test_a_dataset_that_cannot_be_fetched_exits_2_naming_the_mirror(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    install_generated_mnist(tmp_path, monkeypatch, cached=False)
    dead = "http://127.0.0.1:9/mirror"
    with caplog.at_level(logging.ERROR):
        code = cli.main(
            [
                "baseline",
                "--data-dir",
                str(tmp_path / "data"),
                "--dataset-mirror",
                dead,
                "--device",
                "cpu",
            ]
        )
    assert code == 2
    assert f"{dead}/train-images-idx3-ubyte.gz" in caplog.text
    assert str(tmp_path / "data" / "mnist") in caplog.text


# --- end to end: a real server and two MXNet client processes --------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    not (REPO / "server" / "orchard_server" / "__main__.py").is_file(),
    reason="the server (server/orchard_server) is not in this checkout",
)
def test_a_server_and_two_mxnet_clients_complete_two_rounds_of_mnist_mlp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: list[Proc]
) -> None:
    generated = install_generated_mnist(tmp_path, monkeypatch, n_train=600, n_test=200)
    for filename in MNIST_FILENAMES.values():
        assert (generated.data_dir / "mnist" / filename).is_file()
    federation = fedavg_federation(
        "mnist-mlp",
        clients=2,
        num_rounds=2,
        fit_config={"epochs": 3, "batch_size": 16, "learning_rate": 0.1},
        evaluate_config={"batch_size": 64},
    )
    server = start_loopback_server(tmp_path, {"digits": federation}, procs=processes)
    # The generated files' checksums are registered in each client process
    # (the subprocess twin of the conftest's checksum injection).
    data = ClientDataSource(data_dir=generated.data_dir, generated=generated.source_dir)
    for i in range(2):
        processes.append(
            start_framework_client(
                "mxnet",
                tmp_path,
                port=server.port,
                federation="digits",
                name=f"mxnet-{i}",
                model="mnist-mlp",
                data=data,
                mxnet=sys.executable,
            )
        )
    assert server.proc.wait(240) == 0, tails(processes)
    for proc in processes[1:]:
        assert proc.wait(60) == 0, tails(processes)
    rounds = server.history("digits")["rounds"]
    assert [r["round"] for r in rounds] == [1, 2], tails(processes)
    for record in rounds:
        participants = record["fit"]["participants"]
        assert len(participants) == 2, record
        assert {p["framework"] for p in participants} == {"mxnet"}, record
        assert sorted(p["partition"] for p in participants) == [0, 1], record
        # 300 examples per partition, 10% held out for validation.
        assert record["fit"]["num_examples"] == 540, record
        assert record["evaluate"]["loss"] is not None, record
    assert rounds[1]["evaluate"]["loss"] < rounds[0]["evaluate"]["loss"], rounds
    assert rounds[1]["evaluate"]["metrics"]["accuracy"] > 0.8, rounds
    client_log = processes[1].log.read_text()
    assert "epoch 3/3: loss " in client_log
    assert "examples/s" in client_log
