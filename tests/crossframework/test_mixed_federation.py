"""One federation, one global model: a PyTorch client and an MXNet client train it together.

A real server, ``python -m orchard_pytorch client`` in the main environment and
``python -m orchard_mxnet client`` in ``.venv-mxnet`` federate ``mnist-mlp``
(FedAvg, 5 rounds, SGD lr 0.05, one epoch of batch 32 per round) on 600
generated MNIST-format training images split between them. Every round both
clients evaluate the new global model on the same 200 test images
(``split = "test"``).

Stated threshold: the global model's test accuracy rises strictly every round
and reaches at least 0.80 in round 5 (it starts near chance, below 0.40,
after round 1). Measured here: 0.21, 0.30, 0.53, 0.72, 0.91 (partitions and
seeds are fixed, so runs repeat).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.helpers.crossframework import (
    ClientDataSource,
    MixedFederation,
    accuracy_table,
    run_mixed_federation,
)
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
    tmp_path: Path, mxnet_interpreter: Path
) -> None:
    source = tmp_path / "mnist"
    write_mnist_files(source, N_TRAIN, N_TEST, seed=0)
    settings = MixedFederation(
        model="mnist-mlp",
        num_rounds=ROUNDS,
        seed=0,
        fit_config={"epochs": 1, "batch_size": 32, "learning_rate": 0.05},
        round_timeout=60.0,
    )
    outcome = run_mixed_federation(
        tmp_path / "run",
        settings,
        ClientDataSource(data_dir=source, generated=source),
        mxnet=mxnet_interpreter,
        timeout=120.0,
    )
    table = accuracy_table(outcome)
    print(table)  # shown with -s: the per-round numbers behind the assertions

    rounds = outcome.rounds
    assert [r.round for r in rounds] == list(range(1, ROUNDS + 1)), table
    for record in outcome.history["rounds"]:
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
