"""The generic client on the PyTorch adapter: fit/evaluate on generated data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from orchard.client.adapter import AdapterClient
from orchard.data.partition import PartitionSpec
from orchard.messages import Role
from orchard.models import get_model_spec
from orchard.spec import SpecError
from orchard.typing import Config, NDArrays
from orchard_pytorch.client import PyTorchAdapter
from orchard_pytorch.data import ClientData, ImageSet
from orchard_pytorch.models import SpecNet, build_model, get_parameters
from orchard_pytorch.train import ConfigError
from tests.helpers.client_data import ADAPTER_FIT_METRICS, GeneratedCifar, GeneratedMnist

FIT: Config = {"epochs": 1, "batch_size": 16, "learning_rate": 0.1, "seed": 3}
Client = AdapterClient[SpecNet, ImageSet]


def _client(mnist: GeneratedMnist, *, role: Role = Role.TRAINER, seed: int = 0) -> Client:
    spec = PartitionSpec(scheme="iid", num_partitions=2, seed=0)
    data = ClientData(
        mnist.settings(), model_id="mnist-mlp", partition=spec, partition_id=0, seed=0
    )
    return AdapterClient(
        PyTorchAdapter("cpu"), model_id="mnist-mlp", data=data, role=role, seed=seed
    )


def _global(model_id: str = "mnist-mlp", seed: int = 100) -> NDArrays:
    return get_parameters(build_model(model_id, seed=seed))


def test_fit_returns_valid_parameters_and_the_number_of_training_examples(
    mnist: GeneratedMnist,
) -> None:
    client = _client(mnist)
    start = _global()
    params, num_examples, metrics = client.fit(start, {**FIT, "epochs": 3})
    get_model_spec("mnist-mlp").validate(params)
    # 100 examples in the partition, 90 of them for training; epochs do not multiply it.
    assert num_examples == 90
    assert set(metrics) == ADAPTER_FIT_METRICS
    assert isinstance(metrics["train_loss"], float)
    assert not all(np.array_equal(a, b) for a, b in zip(params, start, strict=True))


def test_fit_starts_from_the_given_parameters(mnist: GeneratedMnist) -> None:
    # Two clients with different local initial weights end identically when
    # given the same global parameters and config: local weights are replaced.
    a = _client(mnist, seed=1)
    b = _client(mnist, seed=2)
    start = _global()
    pa, _, _ = a.fit(start, FIT)
    pb, _, _ = b.fit(start, FIT)
    assert all(np.array_equal(x, y) for x, y in zip(pa, pb, strict=True))


def test_rounds_of_fit_lower_the_validation_loss(mnist: GeneratedMnist) -> None:
    client = _client(mnist)
    params = _global()
    first, _, _ = client.evaluate(params, {})
    for _ in range(3):
        params, _, _ = client.fit(params, {**FIT, "epochs": 4, "batch_size": 8, "momentum": 0.9})
    last, _, metrics = client.evaluate(params, {})
    assert last < 0.5 * first
    assert isinstance(metrics["accuracy"], float)


def test_evaluate_uses_validation_by_default_and_test_on_request(mnist: GeneratedMnist) -> None:
    client = _client(mnist)
    params = _global()
    loss, n_val, metrics = client.evaluate(params, {"batch_size": 4})
    assert n_val == 10
    assert set(metrics) == {"accuracy"}
    assert loss > 0
    _, n_test, _ = client.evaluate(params, {"split": "test"})
    assert n_test == 50


def test_evaluator_clients_evaluate_on_the_whole_test_set(mnist: GeneratedMnist) -> None:
    client = _client(mnist, role=Role.EVALUATOR)
    _, n, _ = client.evaluate(_global(), {"split": "val"})
    assert n == 50
    with pytest.raises(ConfigError, match="evaluator"):
        client.fit(_global(), FIT)


def test_evaluate_matches_the_model_directly(mnist: GeneratedMnist) -> None:
    client = _client(mnist)
    params = _global()
    loss, n, metrics = client.evaluate(params, {"split": "test"})
    model = build_model("mnist-mlp", seed=100)
    images = torch.from_numpy(mnist.arrays.test_images).float().div(255).unsqueeze(1)
    labels = torch.from_numpy(mnist.arrays.test_labels).long()
    with torch.no_grad():
        logits = model(images)
    assert n == 50
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), 1e-5)
    assert metrics["accuracy"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def test_fedprox_keeps_the_update_closer_to_the_global_model(mnist: GeneratedMnist) -> None:
    start = _global()

    def drift(mu: float) -> float:
        params, _, _ = _client(mnist).fit(start, {**FIT, "epochs": 2, "proximal_mu": mu})
        return sum(float(((p - s) ** 2).sum()) for p, s in zip(params, start, strict=True))

    assert drift(2.0) < 0.8 * drift(0.0)


def test_get_parameters_follows_the_spec(mnist: GeneratedMnist) -> None:
    params = _client(mnist).get_parameters({})
    get_model_spec("mnist-mlp").validate(params)


def test_parameters_of_another_shape_are_refused(mnist: GeneratedMnist) -> None:
    params = _global()
    params[0] = params[0][:, :100]
    with pytest.raises(SpecError, match=r"fc1\.weight"):
        _client(mnist).fit(params, FIT)


@pytest.mark.parametrize(
    ("config", "message"),
    [({"split": "train"}, "'split' must be 'val' or 'test'"), ({"batch_size": 0}, "batch_size")],
)
def test_bad_evaluate_config_is_named(mnist: GeneratedMnist, config: Config, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _client(mnist).evaluate(_global(), config)


def test_cifar10_cnn_client_fits_on_its_partition(
    cifar: GeneratedCifar, cifar_data_dir: Path
) -> None:
    spec = PartitionSpec(scheme="shards", num_partitions=2, seed=0)
    data = ClientData(
        cifar.settings(cifar_data_dir, download=False),
        model_id="cifar10-cnn",
        partition=spec,
        partition_id=1,
        seed=0,
    )
    client = AdapterClient(PyTorchAdapter("cpu"), model_id="cifar10-cnn", data=data)
    params, n, _ = client.fit(_global("cifar10-cnn"), {"epochs": 1, "batch_size": 8})
    get_model_spec("cifar10-cnn").validate(params)
    assert n == 45
