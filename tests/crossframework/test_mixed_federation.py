"""One federation, one global model: a PyTorch client and an MXNet client train it together.

``python -m orchard.launch fashion-federation`` (what ``make
fashion-federation`` runs), here on 600 generated MNIST-format training images
instead of Fashion-MNIST: a real server, ``python -m orchard_pytorch client``
in the main environment and ``python -m orchard_mxnet client`` in
``.venv-mxnet`` federate ``mnist-mlp`` (FedAvg, 5 rounds, SGD lr 0.05, one
epoch of batch 32 per round), each on a fixed half of the images. Every round
both clients evaluate the new global model on the same 200 test images
(``split = "test"``).

Stated threshold: the global model's test accuracy rises strictly every round
and reaches at least 0.80 in round 5 (it starts near chance, below 0.40,
after round 1). Measured here: 0.21, 0.30, 0.53, 0.72, 0.91 (partitions and
seeds are fixed, so runs repeat).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from orchard.launch import cli
from orchard.launch.mixed import accuracy_table, round_summaries
from tests.helpers.datasets import write_mnist_files

pytestmark = pytest.mark.slow

N_TRAIN = 600
N_TEST = 200
ROUNDS = 5
FINAL_ACCURACY = 0.80
FIRST_ROUND_BELOW = 0.40
#: Both clients evaluate the same model on the same images: at most 1 point apart.
AGREEMENT = 0.01


def test_pytorch_and_mxnet_clients_train_one_global_model(
    tmp_path: Path, mxnet_interpreter: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "mnist"
    write_mnist_files(source, N_TRAIN, N_TEST, seed=0)
    run_dir = tmp_path / "run"
    code = cli.main(
        [
            "fashion-federation",
            "--dataset",
            "mnist",
            "--data-dir",
            str(source),
            "--no-verify",  # generated files cannot match the official checksums
            "--rounds",
            str(ROUNDS),
            "--batch-size",
            "32",
            "--learning-rate",
            "0.05",
            "--run-dir",
            str(run_dir),
            "--timeout",
            "120",
            "--mxnet-python",
            str(mxnet_interpreter),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    history = json.loads((run_dir / "state" / "mnist" / "history.json").read_text())
    rounds = round_summaries(history)
    table = accuracy_table(rounds)
    print(table)  # shown with -s: the per-round numbers behind the assertions
    # The command printed progress per round, then the same table, and saved it.
    for r in rounds:
        assert f"round {r.round}/{ROUNDS}: global accuracy {r.accuracy:.4f}" in out
    assert table in out
    assert (run_dir / "accuracy.md").read_text() == table + "\n"

    assert [r.round for r in rounds] == list(range(1, ROUNDS + 1)), table
    for record in history["rounds"]:
        fit = record["fit"]
        assert sorted(p["framework"] for p in fit["participants"]) == ["mxnet", "pytorch"]
        assert not fit["dropped"], record
        # Each client trains on 90% of its half of the training images.
        assert fit["num_examples"] == 2 * (N_TRAIN // 2 * 9 // 10), record

    for r in rounds:
        assert set(r.by_framework) == {"pytorch", "mxnet"}, table
        torch_accuracy, torch_loss = r.by_framework["pytorch"]
        mxnet_accuracy, mxnet_loss = r.by_framework["mxnet"]
        assert abs(torch_accuracy - mxnet_accuracy) <= AGREEMENT, table
        assert mxnet_loss == pytest.approx(torch_loss, rel=1e-5), table

    accuracies = [r.accuracy for r in rounds]
    assert accuracies[0] < FIRST_ROUND_BELOW, table
    assert all(b > a for a, b in itertools.pairwise(accuracies)), table
    assert accuracies[-1] >= FINAL_ACCURACY, table
    losses = [r.loss for r in rounds]
    assert all(b < a for a, b in itertools.pairwise(losses)), table


def test_missing_dataset_files_exit_2_naming_the_debian_package(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["fashion-federation", "--data-dir", str(tmp_path / "nothing")])
    assert code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nothing") in err
    assert "apt-get install dataset-fashion-mnist" in err
