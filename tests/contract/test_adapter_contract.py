"""The adapter contract (:class:`orchard.client.adapter.FrameworkAdapter`), for every adapter.

Each test runs once per adapter importable in this environment (see the
conftest). What is checked is what federation relies on: parameters in the
registered spec's order that survive a round trip bit for bit, strict
loading, seeded and reproducible training that learns, FedProx's pull
towards the reference, evaluation results, device selection, and the generic
client on top.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from orchard.client.adapter import AdapterClient, DeviceError, FrameworkAdapter, TrainResult
from orchard.client.progress import ProgressBoard
from orchard.client.training import ConfigError, EpochStats, EvalResult, TrainConfig, TrainingError
from orchard.data.client_data import DATASETS, DataError
from orchard.data.partition import PartitionSpec
from orchard.messages import Role
from orchard.models import get_model_spec
from orchard.spec import SpecError
from orchard.typing import NDArrays
from tests.contract.conftest import AdapterFactory
from tests.helpers.client_data import ADAPTER_FIT_METRICS, GeneratedMnist

Adapter = FrameworkAdapter[Any, Any]
MODEL = "mnist-mlp"  # every adapter implements it: the cross-framework model


def _data(adapter: Adapter, digits: GeneratedMnist, **overrides: Any) -> Any:
    return adapter.client_data(digits.settings(**overrides), model_id=MODEL, seed=0)


def _distance(a: NDArrays, b: NDArrays) -> float:
    return sum(
        float(np.sum((x.astype(np.float64) - y.astype(np.float64)) ** 2))
        for x, y in zip(a, b, strict=True)
    )


def _same(a: NDArrays, b: NDArrays) -> bool:
    return all(x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True))


# --- identity and models --------------------------------------------------------------


def test_the_adapter_names_its_framework_models_datasets_and_device(adapter: Adapter) -> None:
    assert adapter.framework.isidentifier()
    assert adapter.device == "cpu"
    assert MODEL in adapter.model_ids
    for model_id in adapter.model_ids:
        get_model_spec(model_id)  # registered
    assert set(adapter.datasets) <= set(DATASETS)


def test_every_model_matches_its_registered_spec(adapter: Adapter) -> None:
    for model_id in adapter.model_ids:
        spec = get_model_spec(model_id)
        model = adapter.build_model(model_id, seed=0)
        assert adapter.model_spec(model) == spec  # names, shapes and dtypes, in order
        arrays = adapter.get_parameters(model)
        spec.validate(arrays)
        for tensor, array in zip(spec.tensors, arrays, strict=True):
            assert (tuple(array.shape), array.dtype.name) == (tensor.shape, tensor.dtype)


def test_initial_weights_depend_only_on_the_seed(adapter: Adapter) -> None:
    a = adapter.get_parameters(adapter.build_model(MODEL, seed=7))
    b = adapter.get_parameters(adapter.build_model(MODEL, seed=7))
    c = adapter.get_parameters(adapter.build_model(MODEL, seed=8))
    assert _same(a, b)
    assert not _same(a, c)


def test_an_unknown_model_id_is_refused(adapter: Adapter) -> None:
    with pytest.raises(SpecError, match="'resnet-50'"):
        adapter.build_model("resnet-50", seed=0)


# --- parameters -----------------------------------------------------------------------


def test_parameters_round_trip_bit_exactly_in_spec_order(adapter: Adapter) -> None:
    spec = get_model_spec(MODEL)
    rng = np.random.default_rng(0)
    arrays = [rng.normal(0, 1, t.shape).astype(np.float32) for t in spec.tensors]
    # Values that lossy paths change: the extremes of float32, negative zero, a subnormal.
    arrays[0].flat[:4] = [np.finfo(np.float32).max, np.finfo(np.float32).tiny, -0.0, 1e-40]
    model = adapter.build_model(MODEL, seed=0)
    adapter.set_parameters(model, arrays)
    back = adapter.get_parameters(model)
    assert [a.shape for a in back] == [t.shape for t in spec.tensors]
    assert _same(back, arrays)
    # Copies, not views: changing what came out changes nothing inside.
    back[0][...] = 0.0
    assert _same(adapter.get_parameters(model), arrays)


def test_parameters_move_between_models(adapter: Adapter) -> None:
    source = adapter.get_parameters(adapter.build_model(MODEL, seed=1))
    target = adapter.build_model(MODEL, seed=2)
    adapter.set_parameters(target, source)
    assert _same(adapter.get_parameters(target), source)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda a: a.__setitem__(2, a[2][:, :10]), r"tensor 'fc2\.weight': expected shape"),
        (lambda a: a.__setitem__(5, a[5].astype(np.float64)), r"'fc3\.bias'.*float32.*float64"),
        (lambda a: a.pop(), "has 6 tensors, got 5"),
    ],
    ids=["shape", "dtype", "count"],
)
def test_mismatched_parameters_are_refused_by_name_and_nothing_is_loaded(
    adapter: Adapter, damage: Any, message: str
) -> None:
    model = adapter.build_model(MODEL, seed=3)
    before = adapter.get_parameters(model)
    arrays = adapter.get_parameters(adapter.build_model(MODEL, seed=4))
    damage(arrays)
    with pytest.raises(SpecError, match=message):
        adapter.set_parameters(model, arrays)
    assert _same(adapter.get_parameters(model), before)


# --- training -------------------------------------------------------------------------

CONFIG = TrainConfig(epochs=3, batch_size=16, learning_rate=0.1, momentum=0.9, seed=5)


def test_training_lowers_the_loss_and_reports_every_epoch(
    adapter: Adapter, digits: GeneratedMnist
) -> None:
    data = _data(adapter, digits)
    model = adapter.build_model(MODEL, seed=0)
    before = adapter.evaluate(model, data.train, batch_size=64)
    epochs: list[EpochStats] = []
    result = adapter.train(model, data.train, CONFIG, on_epoch=epochs.append)
    after = adapter.evaluate(model, data.train, batch_size=64)
    assert isinstance(result, TrainResult)
    assert after.loss < 0.5 * before.loss
    assert after.accuracy > 0.8  # chance is 0.1
    # Training examples, not batches and not epochs x examples: FedAvg's weight.
    assert result.num_examples == len(data.train) == 180
    assert [e.epoch for e in epochs] == [1, 2, 3]
    assert result.history == tuple(epochs)
    assert (result.loss, result.accuracy) == (epochs[-1].loss, epochs[-1].accuracy)


def test_the_same_seed_gives_the_same_result_and_another_seed_another(
    adapter: Adapter, digits: GeneratedMnist
) -> None:
    data = _data(adapter, digits)
    config = TrainConfig(epochs=1, batch_size=16, learning_rate=0.1, seed=11)

    def run(seed: int) -> tuple[NDArrays, TrainResult]:
        model = adapter.build_model(MODEL, seed=0)
        result = adapter.train(model, data.train, dataclasses.replace(config, seed=seed))
        return adapter.get_parameters(model), result

    first, result = run(11)
    again, result_again = run(11)
    other, _ = run(12)
    assert _same(first, again)
    assert (result.loss, result.accuracy) == (result_again.loss, result_again.accuracy)
    assert not _same(first, other)  # the seed orders the examples


def test_fedprox_pulls_the_result_towards_the_reference(
    adapter: Adapter, digits: GeneratedMnist
) -> None:
    data = _data(adapter, digits)
    reference = adapter.get_parameters(adapter.build_model(MODEL, seed=21))

    def distance_to_reference(mu: float) -> float:
        model = adapter.build_model(MODEL, seed=20)
        config = TrainConfig(epochs=2, batch_size=16, learning_rate=0.05, proximal_mu=mu, seed=1)
        adapter.train(model, data.train, config, proximal_reference=reference)
        return _distance(adapter.get_parameters(model), reference)

    assert distance_to_reference(1.0) < 0.8 * distance_to_reference(0.0)


def test_fedprox_defaults_to_the_parameters_on_entry(
    adapter: Adapter, digits: GeneratedMnist
) -> None:
    data = _data(adapter, digits)

    def drift(mu: float) -> float:
        model = adapter.build_model(MODEL, seed=30)
        start = adapter.get_parameters(model)
        config = TrainConfig(epochs=2, batch_size=16, learning_rate=0.1, proximal_mu=mu, seed=1)
        adapter.train(model, data.train, config)
        return _distance(adapter.get_parameters(model), start)

    assert drift(2.0) < 0.8 * drift(0.0)


def test_training_on_no_examples_is_a_clear_error(adapter: Adapter, digits: GeneratedMnist) -> None:
    empty = _data(adapter, digits, val_fraction=0.0).val
    with pytest.raises(TrainingError, match="training set is empty"):
        adapter.train(adapter.build_model(MODEL, seed=0), empty, CONFIG)


# --- evaluation -----------------------------------------------------------------------


def test_evaluate_returns_loss_accuracy_and_the_number_of_examples(
    adapter: Adapter, digits: GeneratedMnist
) -> None:
    data = _data(adapter, digits)
    model = adapter.build_model(MODEL, seed=0)
    result = adapter.evaluate(model, data.test, batch_size=7)  # 50 = 7 x 7 + 1
    assert isinstance(result, EvalResult)
    assert result.num_examples == 50
    assert 1.0 < result.loss < 5.0  # an untrained 10-way classifier: about ln(10)
    assert 0.0 <= result.accuracy <= 1.0
    # The batch size changes nothing but the speed.
    whole = adapter.evaluate(model, data.test, batch_size=50)
    assert whole.loss == pytest.approx(result.loss, rel=1e-5)
    assert whole.accuracy == result.accuracy


def test_evaluating_no_examples_has_no_weight(adapter: Adapter, digits: GeneratedMnist) -> None:
    empty = _data(adapter, digits, val_fraction=0.0).val
    assert adapter.evaluate(adapter.build_model(MODEL, seed=0), empty, batch_size=8) == (
        0.0,
        0.0,
        0,
    )


# --- data and devices -----------------------------------------------------------------


def test_data_the_model_cannot_take_is_refused_before_reading(
    adapter: Adapter, digits: GeneratedMnist
) -> None:
    settings = digits.settings(dataset="cifar10")
    with pytest.raises(DataError, match="cifar10"):
        adapter.client_data(settings, model_id=MODEL)


def test_the_cpu_always_resolves(adapter_type: AdapterFactory) -> None:
    assert adapter_type("cpu").device == "cpu"
    assert adapter_type("CPU").device == "cpu"


def test_a_gpu_that_is_not_there_is_a_clear_error(adapter_type: AdapterFactory) -> None:
    if adapter_type("auto").device != "cpu":
        assert adapter_type("cuda").device == "cuda:0"
        return
    with pytest.raises(DeviceError, match=r"--device cuda \(ORCHARD_DEVICE\) asks for a GPU"):
        adapter_type("cuda")


def test_an_unknown_device_names_the_choices(adapter_type: AdapterFactory) -> None:
    with pytest.raises(DeviceError, match=r"'tpu'.*auto, cpu, cuda, cuda:N"):
        adapter_type("tpu")


# --- the generic client on top ----------------------------------------------------------


def test_the_generic_client_fits_and_evaluates(adapter: Adapter, digits: GeneratedMnist) -> None:
    data = adapter.client_data(
        digits.settings(),
        model_id=MODEL,
        partition=PartitionSpec(scheme="iid", num_partitions=2, seed=0),
        partition_id=1,
    )
    board, epochs = ProgressBoard(), list[EpochStats]()
    client = AdapterClient(
        adapter, model_id=MODEL, data=data, progress=board, on_epoch=epochs.append
    )
    start = client.get_parameters({})
    get_model_spec(MODEL).validate(start)
    before, n_val, _ = client.evaluate(start, {})
    params, n, metrics = client.fit(start, {"epochs": 3, "batch_size": 8, "learning_rate": 0.1})
    after, _, evaluated = client.evaluate(params, {"split": "val"})
    assert (n, n_val) == (90, 10)
    # Each epoch's end reaches the progress the heartbeats send, and on_epoch.
    assert [e.epoch for e in epochs] == [1, 2, 3]
    progress = board.current()
    assert progress is not None and (progress.fraction, progress.epoch) == (1.0, 3)
    assert progress.examples_per_second > 0
    assert set(metrics) == ADAPTER_FIT_METRICS
    # The whole fit contains the training loops, so it cannot be faster than them.
    assert (
        0 < float(metrics["fit_examples_per_second"]) <= float(metrics["train_examples_per_second"])
    )
    assert float(metrics["fit_cpu_examples_per_second"]) > 0
    assert set(evaluated) == {"accuracy"}
    assert after < before
    evaluator = AdapterClient(adapter, model_id=MODEL, data=data, role=Role.EVALUATOR)
    assert evaluator.evaluate(params, {"split": "val"})[1] == 50  # always the whole test set
    with pytest.raises(ConfigError, match="evaluator"):
        evaluator.fit(params, {})
