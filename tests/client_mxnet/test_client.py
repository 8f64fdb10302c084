"""The generic client on the MXNet adapter: fit and evaluate as the runtime calls them."""

from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")

from orchard.client.adapter import AdapterClient  # noqa: E402
from orchard.data.partition import PartitionSpec  # noqa: E402
from orchard.messages import Role  # noqa: E402
from orchard.models import get_model_spec  # noqa: E402
from orchard.spec import SpecError  # noqa: E402
from orchard.typing import Config  # noqa: E402
from orchard_mxnet.client import MXNetAdapter  # noqa: E402
from orchard_mxnet.data import ClientData, DataError, DataSettings, ImageSet  # noqa: E402
from orchard_mxnet.models import SpecNet, set_parameters  # noqa: E402
from orchard_mxnet.train import ConfigError  # noqa: E402
from tests.client_mxnet.conftest import GeneratedMnist  # noqa: E402
from tests.helpers.client_data import ADAPTER_FIT_METRICS  # noqa: E402

pytestmark = pytest.mark.mxnet

Client = AdapterClient[SpecNet, ImageSet]
FIT_CONFIG: Config = {"epochs": 2, "batch_size": 16, "learning_rate": 0.1, "seed": 3}


def _client(generated: GeneratedMnist, role: Role = Role.TRAINER, pid: int = 0) -> Client:
    data = ClientData(
        DataSettings(dataset="mnist", data_dir=generated.data_dir),
        model_id="mnist-mlp",
        partition=PartitionSpec(scheme="iid", num_partitions=2, seed=0),
        partition_id=pid,
    )
    return AdapterClient(MXNetAdapter("cpu"), model_id="mnist-mlp", data=data, role=role, seed=1)


def test_fit_trains_from_the_given_parameters_and_counts_training_examples(
    generated_mnist: GeneratedMnist,
) -> None:
    client = _client(generated_mnist)
    start = client.get_parameters({})
    get_model_spec("mnist-mlp").validate(start)
    before_loss, _, before = client.evaluate(start, {"batch_size": 64})
    parameters, num_examples, metrics = client.fit(start, FIT_CONFIG)
    assert num_examples == 135  # 150 in the partition, 10% held out
    assert set(metrics) == ADAPTER_FIT_METRICS
    assert 0.0 <= float(metrics["train_accuracy"]) <= 1.0
    get_model_spec("mnist-mlp").validate(parameters)
    assert not np.array_equal(parameters[0], start[0])
    after_loss, n_val, after = client.evaluate(parameters, {"batch_size": 64})
    assert n_val == 15
    assert after_loss < before_loss
    assert float(after["accuracy"]) >= float(before["accuracy"])


def test_fit_starts_from_the_servers_parameters_not_the_local_ones(
    generated_mnist: GeneratedMnist,
) -> None:
    """Two clients with different local weights, given the same global model
    and config, end up with identical updates."""
    one = _client(generated_mnist)
    other = _client(generated_mnist)
    rng = np.random.default_rng(0)
    drifted = [
        (np.asarray(p, np.float64) + rng.normal(0, 0.1, p.shape)).astype(np.float32)
        for p in one.get_parameters({})
    ]
    set_parameters(one.model, drifted)  # different local weights
    global_parameters = other.get_parameters({})
    a, _, _ = one.fit(global_parameters, FIT_CONFIG)
    b, _, _ = other.fit(global_parameters, FIT_CONFIG)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_fedprox_config_keeps_the_update_nearer_the_global_model(
    generated_mnist: GeneratedMnist,
) -> None:
    client = _client(generated_mnist)
    start = client.get_parameters({})
    distances = []
    for mu in (0.0, 2.0):
        parameters, _, _ = client.fit(start, {**FIT_CONFIG, "proximal_mu": mu})
        distances.append(
            sum(
                float(np.sum((np.asarray(p, np.float64) - np.asarray(s, np.float64)) ** 2))
                for p, s in zip(parameters, start, strict=True)
            )
        )
    assert distances[1] < distances[0]


def test_evaluate_uses_the_split_the_config_names(generated_mnist: GeneratedMnist) -> None:
    client = _client(generated_mnist, pid=1)
    parameters = client.get_parameters({})
    _, n_val, _ = client.evaluate(parameters, {})
    _, n_test, metrics = client.evaluate(parameters, {"split": "test", "batch_size": 32})
    assert (n_val, n_test) == (15, 100)
    assert set(metrics) == {"accuracy"}
    with pytest.raises(ConfigError, match=r"'split' must be 'val' or 'test', got 'train'"):
        client.evaluate(parameters, {"split": "train"})
    with pytest.raises(ConfigError, match="'batch_size' must be a positive integer"):
        client.evaluate(parameters, {"batch_size": 0})


def test_an_evaluator_always_evaluates_the_whole_test_set_and_never_fits(
    generated_mnist: GeneratedMnist,
) -> None:
    client = _client(generated_mnist, role=Role.EVALUATOR)
    parameters = client.get_parameters({})
    assert client.evaluate(parameters, {"split": "val"})[1] == 100
    with pytest.raises(ConfigError, match="evaluator"):
        client.fit(parameters, FIT_CONFIG)
    assert "_train_val" not in vars(client.data)  # the training set was never read


def test_malformed_parameters_are_refused_with_the_tensor_name(
    generated_mnist: GeneratedMnist,
) -> None:
    client = _client(generated_mnist)
    parameters = client.get_parameters({})
    parameters[4] = parameters[4][:, :32]
    with pytest.raises(SpecError, match=r"fc3\.weight"):
        client.fit(parameters, FIT_CONFIG)


def test_data_for_another_model_is_refused(generated_mnist: GeneratedMnist) -> None:
    data = ClientData(
        DataSettings(dataset="mnist", data_dir=generated_mnist.data_dir), model_id="mnist-cnn"
    )
    with pytest.raises(DataError, match=r"'mnist-cnn'.*'mnist-mlp'"):
        AdapterClient(MXNetAdapter("cpu"), model_id="mnist-mlp", data=data)
