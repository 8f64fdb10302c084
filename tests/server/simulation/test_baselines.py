"""Each baseline command end to end on tiny generated data (official file formats)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchard.launch.kinds import checkout_root
from orchard.messages import FederationState
from orchard.typing import Config
from orchard_server.simulation.baselines import build_parser, fedprox_settings, main
from tests.helpers.datasets import write_cifar10_tarball, write_mnist_files

_ROOT = checkout_root()
MXNET_PYTHON = _ROOT / ".venv-mxnet" / "bin" / "python" if _ROOT else None


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("mnist")
    write_mnist_files(directory, 600, 100, seed=0)
    return directory


def test_fedprox_runs_fedavg_without_stragglers_once_as_mu_zero() -> None:
    args = build_parser().parse_args(["fedprox", "--mu", "0", "1", "--stragglers", "0", "0.5"])
    names = [s.name for s in fedprox_settings(args)]
    assert names == [
        "fedprox-mu0-pytorch-s0",
        "fedprox-mu1-pytorch-s0",
        "fedavg-pytorch-s50",
        "fedprox-mu0-pytorch-s50",
        "fedprox-mu1-pytorch-s50",
    ]
    # Without mu=0 in the list, FedAvg is the only run without a proximal term.
    args = build_parser().parse_args(["fedprox", "--mu", "1", "--stragglers", "0"])
    assert [s.name for s in fedprox_settings(args)] == [
        "fedavg-pytorch-s0",
        "fedprox-mu1-pytorch-s0",
    ]


def _history(out: Path, name: str) -> Any:
    data: Any = json.loads((out / name / "history.json").read_text())
    return data


def test_missing_or_damaged_data_is_one_error_before_any_client_starts(
    mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fedavg"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["fedavg", "--data-dir", str(empty), "--rounds", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no usable train-images-idx3-ubyte" in err and str(empty) in err
    assert "--download" in err
    # Generated files are not the official ones: refused unless --no-verify.
    assert main(["fedavg", "--data-dir", str(mnist_dir), "--rounds", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not the official md5" in err and "--no-verify" in err
    assert main(["fedavg", "--dataset", "imagenet", "--out", str(out)]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err
    assert not out.exists()  # nothing ran, nothing written


@pytest.mark.timeout(600)
def test_fedavg_iid_and_non_iid_with_the_paper_column(mnist_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "fedavg"
    args = ["fedavg", "--data-dir", str(mnist_dir), "--no-verify", "--clients", "10"]
    args += ["--rounds", "1", "--batch", "10", "--partitioning", "iid", "shards"]
    assert main([*args, "--workers", "2", "--out", str(out)]) == 0
    table = (out / "results.md").read_text()
    assert "| IID B=10 E=1 | 1 |" in table and table.rstrip().endswith("| 350 |")
    assert "| 34 |" in table
    assert (out / "accuracy.png").stat().st_size > 0
    history = _history(out, "fedavg-pytorch-shards-B10-E1")
    (record,) = history["rounds"]
    assert record["fit"]["selected"] == 1  # C=0.1 of K=10
    assert record["centralized"]["num_examples"] == 100
    assert record["evaluate"] is None  # the clients hold no validation data: test set only


@pytest.mark.timeout(600)
def test_fedprox_keeps_straggler_work_and_fedavg_drops_it(mnist_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "fedprox"
    args = ["fedprox", "--data-dir", str(mnist_dir), "--no-verify", "--model", "mnist-mlp"]
    args += ["--clients", "10", "--fraction", "0.5", "--rounds", "1", "--epochs", "2"]
    args += ["--mu", "1", "--stragglers", "0.9", "--workers", "2", "--out", str(out)]
    assert main(args) == 0
    fedavg = _history(out, "fedavg-pytorch-s90")["rounds"][0]["fit"]
    fedprox = _history(out, "fedprox-mu1-pytorch-s90")["rounds"][0]["fit"]
    assert any("straggler" in why for why in fedavg["dropped"].values())
    assert not fedprox["dropped"]
    assert any("straggler_epochs" in c["metrics"] for c in fedprox["participants"])
    assert (out / "train_loss.png").is_file() and "FedProx mu=1" in (out / "results.md").read_text()


@pytest.mark.timeout(600)
def test_tutorial_on_generated_cifar10_with_centralized_evaluation(tmp_path: Path) -> None:
    write_cifar10_tarball(tmp_path / "cifar" / "cifar-10-binary.tar.gz", 40, seed=0)
    out = tmp_path / "tutorial"
    args = ["tutorial", "--data-dir", str(tmp_path / "cifar"), "--no-verify", "--rounds", "1"]
    assert main([*args, "--centralized", "--workers", "2", "--out", str(out)]) == 0
    (record,) = _history(out, "tutorial")["rounds"]
    assert record["fit"]["selected"] == 10
    assert len(record["evaluate"]["participants"]) == 5
    assert "accuracy" in record["evaluate"]["metrics"]
    assert record["centralized"]["num_examples"] == 40


@pytest.mark.timeout(600)
@pytest.mark.skipif(
    MXNET_PYTHON is None or not MXNET_PYTHON.is_file(), reason="no .venv-mxnet in this checkout"
)
def test_mixed_pytorch_and_mxnet_clients_train_one_model(mnist_dir: Path, tmp_path: Path) -> None:
    import asyncio

    from orchard_server.config import FederationConfig
    from orchard_server.simulation import ClientGroup, SimulationConfig, simulate

    shared: Config = {
        "dataset": "mnist",
        "data_dir": str(mnist_dir),
        "verify": False,
        "model": "mnist-mlp",
    }
    sim = SimulationConfig(
        num_clients=4,
        node_config=shared,
        groups=(
            ClientGroup(
                client_fn="orchard.simulation.clients:adapter_client",
                num_clients=2,
                workers=1,
                node_config={"framework": "pytorch"},
            ),
            ClientGroup(
                client_fn="orchard.simulation.clients:adapter_client",
                num_clients=2,
                workers=1,
                python=str(MXNET_PYTHON),
                node_config={"framework": "mxnet"},
            ),
        ),
    )
    fed = FederationConfig(
        name="mixed",
        model="mnist-mlp",
        num_rounds=1,
        min_fit_clients=4,
        min_available_clients=4,
        fit_config={"epochs": 1, "batch_size": 32, "learning_rate": 0.05},
    )
    result = asyncio.run(simulate(fed, sim, state_dir=tmp_path))
    assert result.state is FederationState.FINISHED, result.reason
    frameworks = {c.framework for c in result.history.rounds[0].fit.participants}
    assert frameworks == {"pytorch", "mxnet"}
